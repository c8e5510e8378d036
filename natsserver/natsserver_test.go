package natsserver

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

const (
	testPassword = "s3cret-embedded-pw"
	testToken    = "tok-embedded-9f2c1a"
)

func debugLogger(w *leadtest.LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestStartServesJetStreamToClientsWithTheConfiguredAuth(t *testing.T) {
	var logs leadtest.LogBuffer
	s, err := Start(Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), User: "lb", Password: testPassword}, debugLogger(&logs))
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	require.NoError(t, s.Ready())

	_, err = natsgo.Connect(s.ClientURL(), natsgo.MaxReconnects(0))
	require.Error(t, err, "a client without credentials is refused")
	_, err = natsgo.Connect(s.ClientURL(), natsgo.UserInfo("lb", "wrong-password"), natsgo.MaxReconnects(0))
	require.Error(t, err, "a client with a wrong password is refused")

	nc, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo("lb", testPassword))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	require.NoError(t, err, "JetStream is on")

	s.Shutdown()
	require.Error(t, s.Ready(), "a stopped server is not ready")
	s.Shutdown() // a second call does nothing

	out := logs.String()
	assert.Contains(t, out, "embedded NATS server started")
	assert.Contains(t, out, "auth=user/password")
	assert.Contains(t, out, "embedded NATS server stopped")
	assert.NotContains(t, out, testPassword)
}

func TestStartWithATokenAndAnEmptyHost(t *testing.T) {
	s, err := Start(Config{Listen: ":0", StoreDir: t.TempDir(), Token: testToken}, nil)
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	assert.Regexp(t, `^nats://127\.0\.0\.1:[1-9][0-9]*$`, s.ClientURL(), "every interface: dialled on loopback")
	_, err = natsgo.Connect(s.ClientURL(), natsgo.MaxReconnects(0))
	require.Error(t, err)
	nc, err := natsgo.Connect(s.ClientURL(), natsgo.Token(testToken))
	require.NoError(t, err)
	nc.Close()
}

func TestStartReportsWhyItCannot(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	file := filepath.Join(t.TempDir(), "a-file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))

	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"address in use", Config{Listen: taken.Addr().String(), StoreDir: t.TempDir(), Password: testPassword, User: "u"},
			[]string{taken.Addr().String(), "address already in use"}},
		{"store dir is a file", Config{Listen: "127.0.0.1:0", StoreDir: file, Token: testToken},
			[]string{"JetStream"}},
		{"bad listen", Config{Listen: "localhost", StoreDir: t.TempDir()}, []string{`listen must be host:port, got "localhost"`}},
		{"no store dir", Config{Listen: "127.0.0.1:0"}, []string{"store directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs leadtest.LogBuffer
			s, err := Start(tc.cfg, debugLogger(&logs))
			require.Error(t, err)
			require.Nil(t, s)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			for _, secret := range []string{testPassword, testToken} {
				assert.NotContains(t, err.Error(), secret)
				assert.NotContains(t, logs.String(), secret)
			}
		})
	}
	// The failed starts released what they took: the port is still only ours.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln.Close()
}

func TestDialURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:4222": "nats://127.0.0.1:4222",
		":4222":          "nats://127.0.0.1:4222",
		"0.0.0.0:4222":   "nats://127.0.0.1:4222",
		"[::]:4222":      "nats://[::1]:4222",
		"10.1.2.3:4222":  "nats://10.1.2.3:4222",
		"nats.lan:4222":  "nats://nats.lan:4222",
	} {
		assert.Equal(t, want, DialURL(listen), listen)
	}
}

func TestStartWarnsOfAnOpenServerBeyondLoopback(t *testing.T) {
	for listen, warned := range map[string]bool{":0": true, "0.0.0.0:0": true, "127.0.0.1:0": false, "localhost:0": false} {
		var logs leadtest.LogBuffer
		s, err := Start(Config{Listen: listen, StoreDir: t.TempDir()}, debugLogger(&logs))
		require.NoError(t, err, listen)
		s.Shutdown()
		assert.Equal(t, warned, strings.Contains(logs.String(), "clients from other machines need no credentials"), listen)
	}
	var logs leadtest.LogBuffer
	s, err := Start(Config{Listen: ":0", StoreDir: t.TempDir(), Token: testToken}, debugLogger(&logs))
	require.NoError(t, err)
	s.Shutdown()
	assert.NotContains(t, logs.String(), "need no credentials", "with auth")
}
