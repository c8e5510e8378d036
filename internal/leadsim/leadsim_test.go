package leadsim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testKey = "leadsim-test-key"

// post asks srv for serial's records from start to end and returns the status and body.
func post(t *testing.T, srv *httptest.Server, serial, start, end string) (int, string) {
	t.Helper()
	body := `{"serialNumber":"` + serial + `","startTime":"` + start + `","endTime":"` + end + `"}`
	req, err := http.NewRequest(http.MethodPost, srv.URL+Path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", testKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestRawRowsComeWhateverTheWindow(t *testing.T) {
	s := New(testKey)
	srv := httptest.NewServer(s)
	defer srv.Close()
	s.Generate("bot-a", time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC))
	s.AddRaw("bot-a", json.RawMessage(`{"Type":"Lead","CreateTime":"9999-12-31T23:59:59-23:59","SessionID":1}`))
	s.AddRaw("bot-b", json.RawMessage(`{"Type":"Lead","CreateTime":"2001-01-01T00:00:00Z","SessionID":2}`))

	var resp struct {
		Data    []map[string]any
		Success bool
	}
	code, body := post(t, srv, "bot-a", "2025-03-01", "2025-03-02") // misses the generated record
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, json.Unmarshal([]byte(body), &resp))
	require.True(t, resp.Success)
	require.Len(t, resp.Data, 1, "only the raw row, which ignores the window")
	assert.Equal(t, "9999-12-31T23:59:59-23:59", resp.Data[0]["CreateTime"])

	_, body = post(t, srv, "bot-a", "2025-03-09", "2025-03-11")
	require.NoError(t, json.Unmarshal([]byte(body), &resp))
	assert.Len(t, resp.Data, 2, "the generated record and the raw row")
}

func TestFaultsForOneChatbot(t *testing.T) {
	s := New(testKey)
	srv := httptest.NewServer(s)
	defer srv.Close()
	envelope := `{"Success":true,"Code":500,"Data":null}`
	s.InjectFor("bot-b", Fault{Body: envelope}, Fault{Status: http.StatusTooManyRequests})
	s.Inject(Fault{Status: http.StatusBadGateway})

	code, body := post(t, srv, "bot-a", "", "")
	assert.Equal(t, http.StatusBadGateway, code, "bot-a gets the shared fault: %s", body)
	code, body = post(t, srv, "bot-b", "", "")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, envelope, body, "a Body fault is answered as it is")
	code, _ = post(t, srv, "bot-b", "", "")
	assert.Equal(t, http.StatusTooManyRequests, code, "bot-b's second fault")
	code, body = post(t, srv, "bot-b", "", "")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"Data":[],"Version":"1.0.0","Success":true,"Code":200,"Message":""}`, body)

	assert.Equal(t, 1, s.RequestsFor("bot-a"))
	assert.Equal(t, 3, s.RequestsFor("bot-b"))
	assert.Equal(t, 4, s.Requests())
}

func TestGenerateEveryUntilCanceled(t *testing.T) {
	s := New(testKey)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.GenerateEvery(ctx, time.Millisecond, "bot-a", "bot-b")
	}()
	count := func() (a, b int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.records["bot-a"]), len(s.records["bot-b"])
	}
	require.Eventually(t, func() bool { a, b := count(); return a > 0 && b > 0 }, 10*time.Second, time.Millisecond,
		"records go to every chatbot")
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("GenerateEvery did not return once ctx was done")
	}
}
