package faultsuite

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

// streamName is the JetStream stream the suite creates over neoagent.>.
const streamName = "LEADS"

// natsBox is an in-process nats-server with JetStream and user/password auth that can be
// stopped and started again on the same port and store directory.
type natsBox struct {
	t        *testing.T
	user     string
	password string
	storeDir string
	port     int // -1 until the first start picked one

	mu sync.Mutex
	ns *natsserver.Server
}

func newNATSBox(t *testing.T, user, password string) *natsBox {
	b := &natsBox{t: t, user: user, password: password, storeDir: t.TempDir(), port: -1}
	b.start()
	t.Cleanup(b.stop)
	return b
}

// start starts the server; the first start picks a free port, later ones reuse it.
func (b *natsBox) start() {
	b.t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: b.port, JetStream: true, StoreDir: b.storeDir,
		Username: b.user, Password: b.password, NoLog: true, NoSigs: true,
	})
	require.NoError(b.t, err)
	ns.Start()
	require.True(b.t, ns.ReadyForConnections(10*time.Second), "nats-server did not start")
	if b.port < 0 {
		addr, ok := ns.Addr().(*net.TCPAddr)
		require.True(b.t, ok, "nats-server address %v", ns.Addr())
		b.port = addr.Port
	}
	b.mu.Lock()
	b.ns = ns
	b.mu.Unlock()
}

// stop shuts the server down and waits until it is gone; a stopped box stays stopped.
func (b *natsBox) stop() {
	b.mu.Lock()
	ns := b.ns
	b.ns = nil
	b.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// url is the client URL without credentials.
func (b *natsBox) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", b.port) }

func (b *natsBox) connect() (*natsgo.Conn, jetstream.JetStream) {
	b.t.Helper()
	nc, err := natsgo.Connect(b.url(), natsgo.UserInfo(b.user, b.password))
	require.NoError(b.t, err)
	js, err := jetstream.New(nc)
	require.NoError(b.t, err)
	return nc, js
}

// createStream creates the stream over neoagent.> with a duplicate window longer than
// the whole run, so that every repeat publish of an event id is dropped.
func (b *natsBox) createStream() {
	b.t.Helper()
	nc, js := b.connect()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streamName, Subjects: []string{"neoagent.>"}, Storage: jetstream.FileStorage,
		Duplicates: 30 * time.Minute,
	})
	require.NoError(b.t, err)
}

// streamMsg is one stored message, reduced to what the suite checks.
type streamMsg struct {
	msgID, ceID, subject string
	event                event.Event
	decodeErr            error
}

// readStream returns every message of the stream, in order.
func (b *natsBox) readStream() []streamMsg {
	b.t.Helper()
	nc, js := b.connect()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streamName)
	require.NoError(b.t, err)
	info, err := s.Info(ctx)
	require.NoError(b.t, err)
	var out []streamMsg
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(b.t, err, "stream message %d", seq)
		sm := streamMsg{msgID: m.Header.Get("Nats-Msg-Id"), ceID: m.Header.Get("Ce-Id"), subject: m.Subject}
		sm.decodeErr = json.Unmarshal(m.Data, &sm.event)
		out = append(out, sm)
	}
	return out
}
