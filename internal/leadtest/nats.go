// Package leadtest holds the test rigs that several packages' tests share: an in-process
// NATS server with JetStream, webhook and Slack stand-ins, stores and fixtures. It is
// imported by tests only.
package leadtest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// NATSOptions shapes a NATS server; the zero value is JetStream on a temporary directory,
// without auth, on a free port of 127.0.0.1.
type NATSOptions struct {
	User, Password string // client auth; "" for none
	StoreDir       string // JetStream storage; "" for a temporary directory
	Port           int    // 0 for a free port

	// Tweak, when set, shapes anything else (TLS, a token, limits, JetStream off) after
	// the fields above are applied, on every start.
	Tweak func(*natsserver.Options)
}

// NATS is an in-process nats-server with JetStream that a test can stop and start again
// on the same port and store directory. It is shut down when the test ends.
type NATS struct {
	t    testing.TB
	opts NATSOptions

	mu  sync.Mutex
	ns  *natsserver.Server
	url string // the client URL of the first start
}

// StartNATS starts a server shaped by o.
func StartNATS(t testing.TB, o NATSOptions) *NATS {
	t.Helper()
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	if o.Port == 0 {
		o.Port = -1
	}
	b := &NATS{t: t, opts: o}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Start starts the server; the first start picks the port, later ones reuse it.
func (b *NATS) Start() {
	b.t.Helper()
	so := &natsserver.Options{
		Host: "127.0.0.1", Port: b.opts.Port, JetStream: true, StoreDir: b.opts.StoreDir,
		Username: b.opts.User, Password: b.opts.Password, NoLog: true, NoSigs: true,
	}
	if b.opts.Tweak != nil {
		b.opts.Tweak(so)
	}
	ns, err := natsserver.NewServer(so)
	require.NoError(b.t, err)
	ns.Start()
	require.True(b.t, ns.ReadyForConnections(10*time.Second), "nats-server did not start")
	if b.opts.Port < 0 {
		addr, ok := ns.Addr().(*net.TCPAddr)
		require.True(b.t, ok, "nats-server address %v", ns.Addr())
		b.opts.Port = addr.Port
	}
	b.mu.Lock()
	b.ns = ns
	if b.url == "" {
		b.url = ns.ClientURL()
	}
	b.mu.Unlock()
}

// Stop shuts the server down and waits until it is gone; stopping a stopped server does
// nothing.
func (b *NATS) Stop() {
	b.mu.Lock()
	ns := b.ns
	b.ns = nil
	b.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// URL is the client URL (tls:// when Tweak turns TLS on), without credentials; it stays
// the same across restarts.
func (b *NATS) URL() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.url
}

// Connect is a client connection with the server's credentials and its JetStream
// context; the caller closes the connection.
func (b *NATS) Connect() (*natsgo.Conn, jetstream.JetStream) {
	b.t.Helper()
	var opts []natsgo.Option
	if b.opts.User != "" {
		opts = append(opts, natsgo.UserInfo(b.opts.User, b.opts.Password))
	}
	nc, err := natsgo.Connect(b.URL(), opts...)
	require.NoError(b.t, err)
	js, err := jetstream.New(nc)
	require.NoError(b.t, err)
	return nc, js
}

// CreateStream creates (or replaces, dropping its messages) a file-backed stream over
// subjects with the given duplicate window, so that a run starts empty and knows no
// event id of an earlier one.
func (b *NATS) CreateStream(name string, dupWindow time.Duration, subjects ...string) {
	b.t.Helper()
	nc, js := b.Connect()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, name); err != nil {
		require.ErrorIs(b.t, err, jetstream.ErrStreamNotFound)
	}
	// Right after a delete, the server may still be removing the old stream's files and
	// refuse to create its store (error 10049, seen once in CI): try again for a while.
	cfg := jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.FileStorage, Duplicates: dupWindow}
	err := backoff.Retry(func() error {
		_, err := js.CreateStream(ctx, cfg)
		return err
	}, backoff.WithMaxRetries(backoff.NewConstantBackOff(100*time.Millisecond), 100))
	require.NoError(b.t, err, "create stream %s", name)
}

// StreamMsg is one stored message, as tests check it.
type StreamMsg struct {
	Subject string
	Header  natsgo.Header
	Data    []byte
}

// ReadStream returns every message of stream name, in order.
func (b *NATS) ReadStream(name string) []StreamMsg {
	b.t.Helper()
	nc, js := b.Connect()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, name)
	require.NoError(b.t, err)
	info, err := s.Info(ctx)
	require.NoError(b.t, err)
	if info.State.Msgs == 0 {
		return nil
	}
	out := make([]StreamMsg, 0, info.State.Msgs)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(b.t, err, "stream %s message %d", name, seq)
		out = append(out, StreamMsg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	}
	return out
}

// StartCluster starts a cluster of n in-process NATS servers with JetStream, named
// n1..nN in cluster name, each with its own store directory and restartable on its
// ports, and waits until the cluster takes a bucket replicated n times.
func StartCluster(t testing.TB, name string, n int) []*NATS {
	t.Helper()
	client, cluster := make([]int, n), make([]int, n)
	var routes []string
	for i := range n {
		client[i], cluster[i] = FreePort(t), FreePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cluster[i]))
	}
	nodes := make([]*NATS, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			nodes[i] = StartNATS(t, NATSOptions{Port: client[i], Tweak: func(o *natsserver.Options) {
				o.ServerName = fmt.Sprintf("n%d", i+1)
				o.Cluster = natsserver.ClusterOpts{Name: name, Host: "127.0.0.1", Port: cluster[i]}
				o.Routes = natsserver.RoutesFromStr(strings.Join(routes, ","))
			}})
		})
	}
	wg.Wait()
	nc, js := nodes[0].Connect()
	defer nc.Close()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "probe", Replicas: n})
		return err == nil
	}, time.Minute, 200*time.Millisecond, "the cluster takes buckets of %d replicas", n)
	return nodes
}

// FreePort is a port of 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
