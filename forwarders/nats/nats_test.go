package nats

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/forwarderstest"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

const (
	testPassword = "s3cret-pa55word"
	testToken    = "t0ken-very-secret"
)

// startServer runs an in-process nats-server on 127.0.0.1, JetStream on unless the
// caller's tweak says otherwise, and shuts it down when the test ends.
func startServer(t testing.TB, tweak func(o *server.Options)) *leadtest.NATS {
	t.Helper()
	return leadtest.StartNATS(t, leadtest.NATSOptions{Tweak: tweak})
}

func newForwarder(t testing.TB, cfg Config) *Forwarder {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "bus"
	}
	f, err := New(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, f.Close()) })
	return f
}

// connect is a test client that reconnects quickly.
func connect(t testing.TB, url string, opts ...natsgo.Option) *natsgo.Conn {
	t.Helper()
	opts = append([]natsgo.Option{natsgo.MaxReconnects(-1), natsgo.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := natsgo.Connect(url, opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

func subscribe(t testing.TB, nc *natsgo.Conn, subject string) chan *natsgo.Msg {
	t.Helper()
	ch := make(chan *natsgo.Msg, 64)
	_, err := nc.ChanSubscribe(subject, ch)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return ch
}

func receive(t testing.TB, ch chan *natsgo.Msg) *natsgo.Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		require.FailNow(t, "no message received")
		return nil
	}
}

// sampleEvent returns a distinct created event per n.
func sampleEvent(n int) event.Event {
	ev := forwarderstest.SampleEvent()
	l := ev.Data
	l.SessionID = int64(n)
	return event.NewCreated(l)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

func deliver(f *Forwarder, ev event.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.Deliver(ctx, ev)
}

func requireCloudEvent(t *testing.T, ev event.Event, m *natsgo.Msg) {
	t.Helper()
	want := map[string]string{
		"Content-Type":   "application/cloudevents+json",
		"Ce-Specversion": "1.0",
		"Ce-Id":          ev.ID,
		"Ce-Source":      ev.Source,
		"Ce-Type":        ev.Type,
		"Ce-Time":        ev.Time.Format(time.RFC3339Nano),
		"Ce-Subject":     ev.Subject,
	}
	for k, v := range want {
		assert.Equal(t, v, m.Header.Get(k), "header %s", k)
	}
	var got event.Event
	require.NoError(t, json.Unmarshal(m.Data, &got))
	assert.Equal(t, ev, got)
}

func TestDeliverCore(t *testing.T) {
	ns := startServer(t, nil)
	f := newForwarder(t, Config{URL: ns.URL()})
	ev := forwarderstest.SampleEvent()
	msgs := subscribe(t, connect(t, ns.URL()), ">")

	require.NoError(t, deliver(f, ev))

	m := receive(t, msgs)
	assert.Equal(t, "neoagent."+ev.Chatbot()+".appointment", m.Subject)
	requireCloudEvent(t, ev, m)
	assert.Empty(t, m.Header.Get("Nats-Msg-Id"), "core mode sets no JetStream id")

	require.NoError(t, f.Close())
	require.NoError(t, f.Close(), "Close twice is fine")
	err := deliver(f, ev)
	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "closed is retryable: %v", err)
	assert.Contains(t, err.Error(), `"bus"`)
}

func TestSubjectTemplate(t *testing.T) {
	ns := startServer(t, func(o *server.Options) { o.JetStream = false })
	sub := connect(t, ns.URL())
	msgs := subscribe(t, sub, ">")
	base := forwarderstest.SampleEvent()

	cases := []struct {
		name        string
		template    string
		chatbotName string
		want        string // the subject; "" means a permanent failure
	}{
		{"default", "", "Main site", "neoagent." + base.Chatbot() + ".appointment"},
		{"type", "{{.Type}}", "Main site", "neoagent.appointment.created"},
		{"name as token", "crm.{{token .ChatbotName}}.{{.Kind}}.{{.Action}}", "Main site", "crm.Main_site.appointment.created"},
		{"name with dots adds tokens", "crm.{{.ChatbotName}}.{{.SessionID}}", "eu.shop", "crm.eu.shop.31313"},
		{"id", "ids.{{.ID}}", "", "ids." + base.ID},
		{"space in name", "crm.{{.ChatbotName}}", "Main site", ""},
		{"empty name", "crm.{{.ChatbotName}}.x", "", ""},
		{"wildcard name", "crm.{{.ChatbotName}}", ">", ""},
		{"star name", "crm.{{.ChatbotName}}.x", "*", ""},
		{"template error", "crm.{{slice .ChatbotName 0 3}}", "ab", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newForwarder(t, Config{URL: ns.URL(), Subject: tc.template})
			l := base.Data
			l.ChatbotName = tc.chatbotName
			ev := event.NewCreated(l)
			err := deliver(f, ev)
			if tc.want == "" {
				require.Error(t, err)
				assert.True(t, forwarders.IsPermanent(err), "want permanent: %v", err)
				assert.Contains(t, err.Error(), `"bus"`)
				return
			}
			require.NoError(t, err)
			m := receive(t, msgs)
			assert.Equal(t, tc.want, m.Subject)
			assert.Equal(t, ev.ID, m.Header.Get("Ce-Id"))
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	const url = "nats://127.0.0.1:4222"
	cases := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no name", Config{URL: url}, "name"},
		{"no url", Config{Name: "bus"}, "url"},
		{"empty url entry", Config{Name: "bus", URL: url + ","}, "url"},
		{"bad scheme", Config{Name: "bus", URL: "http://127.0.0.1:4222"}, "url"},
		{"unparsable url", Config{Name: "bus", URL: "nats://bus:" + testPassword + "@127.0.0.1:%zz"}, "url"},
		{"unparsable template", Config{Name: "bus", URL: url, Subject: "neoagent.{{.Chatbot"}, "subject"},
		{"unknown field", Config{Name: "bus", URL: url, Subject: "neoagent.{{.Serial}}"}, "subject"},
		{"invalid literal", Config{Name: "bus", URL: url, Subject: "neo agent.{{.Kind}}"}, "subject"},
		{"wildcard literal", Config{Name: "bus", URL: url, Subject: "neoagent.>"}, "subject"},
		{"stream without jetstream", Config{Name: "bus", URL: url, Stream: "LEADS"}, "stream"},
		{"bad stream name", Config{Name: "bus", URL: url, JetStream: true, Stream: "leads.all"}, "stream"},
		{"negative timeout", Config{Name: "bus", URL: url, Timeout: -time.Second}, "timeout"},
		{"user without password", Config{Name: "bus", URL: url, User: "bus"}, "password"},
		{"two auth methods", Config{Name: "bus", URL: url, User: "bus", Password: testPassword, Token: testToken}, "token"},
		{"missing creds file", Config{Name: "bus", URL: url, CredsFile: "/nonexistent/bus.creds"}, "creds_file"},
		{"missing nkey file", Config{Name: "bus", URL: url, NKeyFile: "/nonexistent/bus.nk"}, "nkey_file"},
		{"missing ca file", Config{Name: "bus", URL: url, TLS: TLS{CAFile: "/nonexistent/ca.pem"}}, "tls.ca_file"},
		{"cert without key", Config{Name: "bus", URL: url, TLS: TLS{CertFile: "/nonexistent/c.pem"}}, "tls: cert_file and key_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New(tc.cfg, nil)
			require.Error(t, err)
			assert.Nil(t, f)
			assert.Contains(t, err.Error(), tc.field)
			assert.NotContains(t, err.Error(), testPassword)
			assert.NotContains(t, err.Error(), testToken)
		})
	}
}

func TestCheckSubject(t *testing.T) {
	cases := []struct {
		template string
		ok       bool
	}{
		{"", true}, // DefaultSubject
		{DefaultSubject, true},
		{"leads.{{token .ChatbotName}}.{{.Kind}}", true},
		{"{{.Type}}", true},
		{"neoagent.{{.Chatbot", false},
		{"neoagent.{{.Serial}}", false},
		{"neoagent.{{nope .Chatbot}}", false},
		{"neo agent.{{.Kind}}", false},
		{"neoagent.>", false},
		{"neoagent..{{.Kind}}", false},
	}
	for _, tc := range cases {
		cfg := Config{Name: "bus", URL: "nats://127.0.0.1:4222", Subject: tc.template}
		probs := Check(cfg)
		if tc.ok {
			assert.Empty(t, probs, tc.template)
			continue
		}
		require.Len(t, probs, 1, tc.template)
		assert.Equal(t, "subject", probs[0].Key)
		// New checks the subject before connecting, so this makes no connection.
		f, newErr := New(cfg, nil)
		assert.Nil(t, f)
		require.Error(t, newErr, tc.template)
		assert.Contains(t, newErr.Error(), probs[0].Error(), "New reports what Check does")
	}
}

func TestTimeoutBoundsConnecting(t *testing.T) {
	ns := startServer(t, func(o *server.Options) { o.JetStream = false })
	for _, tc := range []struct{ set, want time.Duration }{{0, DefaultTimeout}, {1500 * time.Millisecond, 1500 * time.Millisecond}} {
		f := newForwarder(t, Config{URL: ns.URL(), Timeout: tc.set})
		assert.Equal(t, tc.want, f.nc.Opts.Timeout, "connect timeout")
		assert.Equal(t, tc.want, f.timeout, "publish timeout")
	}
}

func TestJetStreamCreatesStreamAndDropsRepeats(t *testing.T) {
	ns := startServer(t, nil)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "LEADS"})
	ev := forwarderstest.SampleEvent()

	require.NoError(t, deliver(f, ev))
	require.NoError(t, deliver(f, ev), "a repeat is acked as a duplicate")
	other := sampleEvent(2)
	require.NoError(t, deliver(f, other))

	ctx := context.Background()
	js, err := jetstream.New(connect(t, ns.URL()))
	require.NoError(t, err)
	s, err := js.Stream(ctx, "LEADS")
	require.NoError(t, err, "the stream was created")
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"neoagent.>"}, info.Config.Subjects)
	assert.Equal(t, uint64(2), info.State.Msgs, "the repeat was dropped")

	m, err := s.GetMsg(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, "neoagent."+ev.Chatbot()+".appointment", m.Subject)
	assert.Equal(t, ev.ID, m.Header.Get("Nats-Msg-Id"))
	requireCloudEvent(t, ev, &natsgo.Msg{Header: m.Header, Data: m.Data})
}

// The first deliveries on a fresh server come all at once (a backlog, concurrency 256):
// one creates the stream, and none may see it half-known and fail.
func TestJetStreamFirstDeliveriesAtOnceCreateTheStreamOnce(t *testing.T) {
	ns := startServer(t, nil)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "LEADS"})
	const n = 64
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		go func() {
			<-start
			errs <- deliver(f, sampleEvent(i))
		}()
	}
	close(start)
	for range n {
		assert.NoError(t, <-errs)
	}
	assert.Len(t, ns.ReadStream("LEADS"), n)
}

func TestJetStreamExistingStream(t *testing.T) {
	ns := startServer(t, nil)
	ctx := context.Background()
	js, err := jetstream.New(connect(t, ns.URL()))
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}})
	require.NoError(t, err)

	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "OTHER"})
	ev := forwarderstest.SampleEvent()
	err = deliver(f, ev)
	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "an operator may extend the stream: %v", err)
	assert.Contains(t, err.Error(), "does not capture")
	assert.Contains(t, err.Error(), `"bus"`)

	_, err = js.UpdateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>", "neoagent.*.*"}})
	require.NoError(t, err)
	require.NoError(t, deliver(f, ev), "the extended stream is looked up again")

	s, err := js.Stream(ctx, "OTHER")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs)
	assert.Equal(t, []string{"other.>", "neoagent.*.*"}, info.Config.Subjects, "the existing stream was not changed by us")
}

// A subject that another stream captures never lands there: creating Stream fails on
// the overlap, and an existing Stream that does not capture the subject makes the
// server refuse the publish; the error then names the stream that captures it.
func TestJetStreamSubjectOfAnotherStream(t *testing.T) {
	ns := startServer(t, nil)
	ctx := context.Background()
	js, err := jetstream.New(connect(t, ns.URL()))
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "ALL", Subjects: []string{"neoagent.*.lead"}})
	require.NoError(t, err)
	appointment := forwarderstest.SampleEvent()
	l := appointment.Data
	l.Kind = event.KindLead
	lead := event.NewCreated(l)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "LEADS"})

	err = deliver(f, lead)
	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "an operator may fix the streams: %v", err)
	assert.Contains(t, err.Error(), `"bus"`)
	assert.Contains(t, err.Error(), `create with subject "neoagent.>"`)

	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"neoagent.*.appointment"}})
	require.NoError(t, err)
	require.NoError(t, deliver(f, appointment))
	err = deliver(f, lead) // the server refuses it: LEADS is expected
	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
	err = deliver(f, lead) // looked up again
	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
	assert.Contains(t, err.Error(), "does not capture")
	assert.Contains(t, err.Error(), `stream "ALL" does`)

	for name, want := range map[string]uint64{"ALL": 0, "LEADS": 1} {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		assert.Equal(t, want, info.State.Msgs, name)
	}
}

// A JetStream publish that a plain subscriber hears but no stream captures gets no
// ack (and no "no responders" either); the error says what did not come.
func TestJetStreamNoAck(t *testing.T) {
	ns := startServer(t, nil)
	subscribe(t, connect(t, ns.URL()), "neoagent.>")
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Timeout: time.Second})
	err := deliver(f, forwarderstest.SampleEvent())
	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
	assert.Contains(t, err.Error(), `"bus"`)
	assert.Contains(t, err.Error(), "no JetStream ack within the timeout (1s)")
}

func TestJetStreamUnderivableStream(t *testing.T) {
	ns := startServer(t, nil)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "LEADS", Subject: "{{.Chatbot}}.leads"})
	err := deliver(f, forwarderstest.SampleEvent())
	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "an operator may create the stream: %v", err)
	assert.Contains(t, err.Error(), "create the stream")
}

func TestOutage(t *testing.T) {
	for _, jetStream := range []bool{false, true} {
		t.Run(map[bool]string{false: "core", true: "jetstream"}[jetStream], func(t *testing.T) {
			ns := startServer(t, nil)
			const timeout = 2 * time.Second
			cfg := Config{URL: ns.URL(), JetStream: jetStream, Timeout: timeout}
			if jetStream {
				cfg.Stream = "LEADS"
			}
			f := newForwarder(t, cfg)
			sub := connect(t, ns.URL())
			msgs := subscribe(t, sub, "neoagent.>")

			delivered := []event.Event{sampleEvent(1)}
			require.NoError(t, deliver(f, delivered[0]))

			ns.Stop()
			for i := range 3 {
				start := time.Now()
				err := deliver(f, sampleEvent(2))
				require.Error(t, err, "attempt %d during the outage", i)
				assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
				assert.Contains(t, err.Error(), `"bus"`)
				assert.Less(t, time.Since(start), timeout+time.Second, "fails promptly")
			}

			ns.Start()
			require.Eventually(t, sub.IsConnected, 10*time.Second, 20*time.Millisecond, "subscriber reconnects")
			require.NoError(t, sub.Flush())
			require.Eventually(t, func() bool { return deliver(f, sampleEvent(2)) == nil },
				10*time.Second, 50*time.Millisecond, "delivers again after the server is back")
			delivered = append(delivered, sampleEvent(2), sampleEvent(3))
			require.NoError(t, deliver(f, delivered[2]))

			var want []string
			for _, ev := range delivered {
				want = append(want, ev.ID)
			}
			if jetStream {
				// What the stream stored is what counts, read back whole (a duplicate or
				// a gap shows); a core subscriber's view across a server restart is
				// NATS's business, and one missed a message once under CI load.
				assert.Equal(t, want, storedIDs(ns), "every event stored once, in order, across the restart")
				return
			}
			var got []string
			for len(got) < len(want) {
				got = append(got, receive(t, msgs).Header.Get("Ce-Id"))
			}
			assert.ElementsMatch(t, want, got)
		})
	}
}

func TestAuth(t *testing.T) {
	userServer := startServer(t, func(o *server.Options) {
		o.JetStream, o.Username, o.Password = false, "bus", testPassword
	})
	tokenServer := startServer(t, func(o *server.Options) { o.JetStream, o.Authorization = false, testToken })
	userAddr := strings.TrimPrefix(userServer.URL(), "nats://")

	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"right password", Config{URL: userServer.URL(), User: "bus", Password: testPassword}, true},
		{"wrong password", Config{URL: userServer.URL(), User: "bus", Password: testPassword + "x"}, false},
		{"password in url", Config{URL: "nats://bus:" + testPassword + "@" + userAddr}, true},
		{"wrong password in url", Config{URL: "nats://bus:" + testPassword + "x@" + userAddr}, false},
		{"right token", Config{URL: tokenServer.URL(), Token: testToken}, true},
		{"wrong token", Config{URL: tokenServer.URL(), Token: testToken + "x"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &leadtest.LogBuffer{}
			tc.cfg.Name = "bus"
			f, err := New(tc.cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			require.NoError(t, err, "New does not wait for the server")
			t.Cleanup(func() { _ = f.Close() })

			err = deliver(f, forwarderstest.SampleEvent())
			if tc.ok {
				require.NoError(t, err)
			} else {
				// Retryable: the connection keeps trying, so credentials fixed on either
				// side let the outbox drain; the retry budget still dead-letters in the end.
				require.Error(t, err)
				assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
				// The reason arrives through nats.go's callback goroutine.
				require.Eventually(t, func() bool {
					err = deliver(f, forwarderstest.SampleEvent())
					return strings.Contains(strings.ToLower(err.Error()), "authorization violation")
				}, 5*time.Second, 10*time.Millisecond, "the error says why: %v", err)
				assert.Contains(t, err.Error(), `"bus"`)
				assert.NotContains(t, err.Error(), testPassword)
				assert.NotContains(t, err.Error(), testToken)
			}
			require.NoError(t, f.Close())
			assert.NotContains(t, logs.String(), testPassword)
			assert.NotContains(t, logs.String(), testToken)
		})
	}
}

// selfSignedCert makes a certificate for 127.0.0.1 that is its own CA, and writes it
// as PEM into dir.
func selfSignedCert(t *testing.T, dir string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "leadbridge test"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caFile
}

func TestTLS(t *testing.T) {
	cert, caFile := selfSignedCert(t, t.TempDir())
	ns := startServer(t, func(o *server.Options) {
		o.JetStream, o.TLS, o.TLSTimeout = false, true, 2
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	url := ns.URL()
	require.True(t, strings.HasPrefix(url, "tls://"), url)

	cases := []struct {
		name     string
		tls      TLS
		ok       bool
		warnings int
	}{
		{"ca file", TLS{CAFile: caFile}, true, 0},
		{"insecure", TLS{InsecureSkipVerify: true}, true, 1},
		{"system roots reject the certificate", TLS{}, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &leadtest.LogBuffer{}
			f, err := New(Config{Name: "bus", URL: url, TLS: tc.tls}, slog.New(slog.NewTextHandler(logs, nil)))
			require.NoError(t, err)
			t.Cleanup(func() { assert.NoError(t, f.Close()) })
			assert.Equal(t, tc.warnings, strings.Count(logs.String(), "insecure_skip_verify"))
			err = deliver(f, forwarderstest.SampleEvent())
			if tc.ok {
				require.NoError(t, err, logs.String())
				return
			}
			require.Error(t, err)
			assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
			require.Eventually(t, func() bool {
				return strings.Contains(deliver(f, forwarderstest.SampleEvent()).Error(), "certificate")
			}, 5*time.Second, 10*time.Millisecond, "the error says why")
		})
	}
}

func TestConformance(t *testing.T) {
	userServer := startServer(t, func(o *server.Options) {
		o.JetStream, o.Username, o.Password = false, "bus", testPassword
	})
	tokenServer := startServer(t, func(o *server.Options) { o.Authorization = testToken })
	tinyServer := startServer(t, func(o *server.Options) {
		o.JetStream, o.Username, o.Password, o.MaxPayload = false, "bus", testPassword, 64
	})
	forwarderstest.Run(t, forwarderstest.Harness{
		Name: "bus",
		New: func(t *testing.T, fault forwarderstest.Fault) forwarders.Forwarder {
			cfg := Config{Name: "bus", User: "bus", Password: testPassword, Timeout: 2 * time.Second}
			switch fault {
			case forwarderstest.OK:
				cfg.URL = userServer.URL()
			case forwarderstest.Retryable: // JetStream, but no stream captures the subject
				cfg = Config{Name: "bus", URL: tokenServer.URL(), Token: testToken, JetStream: true, Timeout: 2 * time.Second}
			case forwarderstest.Permanent: // the event exceeds the server's max_payload
				cfg.URL = tinyServer.URL()
			case forwarderstest.Unreachable:
				cfg = Config{Name: "bus", URL: fmt.Sprintf("nats://bus:%s@127.0.0.1:%d", testPassword, freePort(t))}
			}
			return newForwarder(t, cfg)
		},
		Faults: []forwarderstest.Fault{
			forwarderstest.OK, forwarderstest.Retryable, forwarderstest.Permanent, forwarderstest.Unreachable,
		},
		Secrets: []string{testPassword, testToken},
	})
}

func TestStreamSubjectDerivation(t *testing.T) {
	cases := []struct{ template, want string }{
		{DefaultSubject, "neoagent.>"},
		{"leads", "leads"},
		{"crm.leads.{{.Kind}}", "crm.leads.>"},
		{"crm.lead{{.Kind}}", "crm.>"},
		{"crm{{.Kind}}", ""},
		{"{{.Chatbot}}.leads", ""},
	}
	for _, tc := range cases {
		_, got, err := parseSubject(tc.template)
		require.NoError(t, err, tc.template)
		assert.Equal(t, tc.want, got, tc.template)
	}
}

func BenchmarkDeliverCore(b *testing.B) {
	ns := startServer(b, func(o *server.Options) { o.JetStream = false })
	benchmarkDeliver(b, newForwarder(b, Config{URL: ns.URL()}))
}

func BenchmarkDeliverJetStream(b *testing.B) {
	ns := startServer(b, nil)
	benchmarkDeliver(b, newForwarder(b, Config{URL: ns.URL(), JetStream: true, Stream: "BENCH"}))
}

// BenchmarkDeliverBatchJetStream measures the Dispatcher's batch path: one op is one
// pipelined batch of MaxBatch events, each acked by the stream.
func BenchmarkDeliverBatchJetStream(b *testing.B) {
	ns := startServer(b, nil)
	f := newForwarder(b, Config{URL: ns.URL(), JetStream: true, Stream: "BENCH"})
	ctx := context.Background()
	n := 0
	evs := make([]event.Event, MaxBatch)
	b.ReportAllocs()
	for b.Loop() {
		for i := range evs {
			n++
			evs[i] = sampleEvent(n)
		}
		for i, err := range f.DeliverBatch(ctx, evs, forwarders.Rest{}) {
			if err != nil {
				b.Fatal(i, err)
			}
		}
	}
}

// The messages of a batch share the allocations of their bodies and each message's
// headers take a few, not one per header (nor the options WithMsgID and WithExpectStream
// would set them with), and still each carries its own event whole, and in JetStream
// mode its id as Nats-Msg-Id and the stream expected.
func TestMessagesBuildCheaply(t *testing.T) {
	ns := startServer(t, nil)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "LEADS"})
	evs := sampleEvents(3)
	arena := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := f.message(evs[0], &arena); err != nil {
			t.Fatal(err)
		}
		arena = arena[:0]
	})
	assert.LessOrEqual(t, allocs, 9.0, "allocations per message")

	arena = arena[:0]
	var msgs []*natsgo.Msg
	for _, ev := range evs {
		m, err := f.message(ev, &arena)
		require.NoError(t, err)
		msgs = append(msgs, m)
	}
	msgs[0].Data = append(msgs[0].Data, "x"...) // grows a copy, never into the next body
	for i, m := range msgs[1:] {
		requireCloudEvent(t, evs[i+1], m)
		assert.Equal(t, evs[i+1].ID, m.Header.Get(jetstream.MsgIDHeader))
		assert.Equal(t, "LEADS", m.Header.Get(jetstream.ExpectedStreamHeader))
	}
}

func benchmarkDeliver(b *testing.B, f *Forwarder) {
	ctx := context.Background()
	n := 0
	for b.Loop() {
		n++
		if err := f.Deliver(ctx, sampleEvent(n)); err != nil {
			b.Fatal(err)
		}
	}
}

// Text around a secret in the same word (a rotated token with a suffix, a credential
// glued to a host) is hidden with it, and so is a long part of a secret on its own.
func TestRedactHidesTheWholeWord(t *testing.T) {
	ns := startServer(t, func(o *server.Options) { o.JetStream, o.Authorization = false, testToken })
	f, err := New(Config{Name: "bus", URL: ns.URL(), Token: testToken}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })

	got := f.redact("auth with " + testToken + "-rotated2 failed; tried xx" + testToken + "@nats.example, " + testToken[2:12])
	assert.Equal(t, "auth with [redacted] failed; tried [redacted] [redacted]", got)
}

// The subject template sees the chatbot's account; an event queued before accounts
// existed was of the top-level account, named default.
func TestSubjectTemplateAccount(t *testing.T) {
	ns := startServer(t, func(o *server.Options) { o.JetStream = false })
	msgs := subscribe(t, connect(t, ns.URL()), ">")
	f := newForwarder(t, Config{URL: ns.URL(), Subject: "leads.{{.Account}}.{{.Kind}}"})
	for account, want := range map[string]string{"client-a": "leads.client-a.appointment", "": "leads.default.appointment"} {
		l := forwarderstest.SampleEvent().Data
		l.Account = account
		require.NoError(t, deliver(f, event.NewCreated(l)))
		assert.Equal(t, want, receive(t, msgs).Subject)
	}
}
