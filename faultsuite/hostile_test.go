package faultsuite

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// The hostile-API phase's shape. Its store keeps seen keys for hostileRetention, the
// least the config allows with a 24h lookback, so that rows older than that are easy to
// make.
const (
	hostileRetention    = 80 * time.Hour
	hostileKnown        = 3 // records per chatbot in the API before the first start
	hostilePerBatch     = 4 // good records per chatbot in each of the two batches
	hostileSession      = 880000
	hostileStart        = 15 * time.Second // until every chatbot's first good poll has ended
	hostileBatchWait    = 15 * time.Second // until a batch is delivered
	hostileExtraPolls   = 2                // polls of every chatbot after the last delivery
	hostileQuiet        = time.Second
	hostileBigSession   = "9007199254740993" // 2^53+1: a float64 reads it as 2^53
	hostileFloatSession = 9007199254740992   // what a float64 makes of hostileBigSession
)

// The chatbots' roles in the hostile phase; each carries one kind of hostile row.
var (
	botBadDate   = serials[0] // a row whose CreateTime is outside years 1..9999 in UTC, on every answer
	botStale     = serials[1] // rows older than store.retention, on every answer
	botOddNumber = serials[2] // a bad Count, and one SessionID spelled two ways
	botMalformed = serials[3] // an undecodable row, on every answer
)

// firstAnswers is what each chatbot's first poll gets: an envelope that says Success but
// holds no answer (an error Code, Data null or missing). Each is a failed poll, so the
// initial: skip baseline must wait for a real answer.
var firstAnswers = map[string]string{
	botBadDate:   `{"Data":null,"Version":"1.0.0","Success":true,"Code":500,"Message":""}`,
	botStale:     `{"Data":null,"Version":"1.0.0","Success":true,"Code":200,"Message":""}`,
	botOddNumber: `{"Data":[],"Version":"1.0.0","Success":true,"Code":"503","Message":""}`,
	botMalformed: `{"Version":"1.0.0","Success":true,"Code":200,"Message":""}`,
}

// badDateTime is a CreateTime that parses but is in year 10000 once in UTC.
const badDateTime = "9999-12-31T23:59:59-23:59"

var pst = time.FixedZone("PST", -8*3600)

// apiTime spells t as the API does, with a -08:00 offset.
func apiTime(t time.Time) string { return t.In(pst).Format("2006-01-02T15:04:05.000000-07:00") }

// recordOf is the record a row with these identity fields must be delivered as.
func recordOf(serial string, kind event.Kind, session int64, createTime string) record {
	created, err := time.Parse(time.RFC3339Nano, createTime)
	if err != nil {
		panic(err) // the suite's own rows are RFC 3339
	}
	lead := event.Lead{Chatbot: serial, Kind: kind, SessionID: session, CreatedAt: created}
	return record{serial: serial, kind: kind, session: session, id: lead.ID()}
}

// hostileAPI is the simulated API with the hostile phase's bookkeeping: which records
// must arrive, which must never.
type hostileAPI struct {
	*leadsim.Server
	next      int64
	want      map[string]record // must reach every target
	known     map[string]record // in the API before the first start: must never be delivered
	stale     map[string]record // older than retention: must never be delivered
	badCount  record            // the row whose Count is "lots": delivered with count 0
	floatRead string            // the id a float64 reading of hostileBigSession would give
}

// add puts one good record into the API, created at at.
func (h *hostileAPI) add(serial string, at time.Time, into map[string]record) {
	h.next++
	session := hostileSession + 100 + h.next
	ct := apiTime(at)
	h.Add(serial, leadsim.Record{
		Type: "Lead", Name: fmt.Sprintf("Zq8-Person-%03d", h.next), Email: fmt.Sprintf("zq8-%03d@example.test", h.next),
		PhoneNumber: fmt.Sprintf("+1 555 8%03d", h.next), CreateTime: ct, Content: fmt.Sprintf("zq8 content %03d", h.next),
		SessionID: session, URI: "www.example.test/hostile", Count: 1,
	})
	r := recordOf(serial, event.KindLead, session, ct)
	into[r.id] = r
}

// addStale puts a row created at at, older than retention, into the API for botStale.
func (h *hostileAPI) addStale(at time.Time) {
	h.next++
	session := hostileSession + 100 + h.next
	ct := apiTime(at)
	h.AddRaw(botStale, json.RawMessage(fmt.Sprintf(
		`{"Type":"Appointment","Name":"Zq8-Stale-%[1]d","Email":"zq8-stale-%[1]d@example.test","PhoneNumber":"",`+
			`"CreateTime":%[2]q,"Content":"zq8 stale","SessionID":%[3]d,"URI":"","Count":1}`, h.next, ct, session)))
	r := recordOf(botStale, event.KindAppointment, session, ct)
	h.stale[r.id] = r
}

// addOddNumbers puts botOddNumber's rows into the API: one whose Count is not a number
// (kept, with count 0) and one record sent twice with SessionID 2^53+1 spelled as a
// string and as 9007199254740993.0 (the same record, one id).
func (h *hostileAPI) addOddNumbers(at time.Time) {
	ct := apiTime(at)
	h.AddRaw(botOddNumber, json.RawMessage(fmt.Sprintf(
		`{"Type":"Lead","Name":"Zq8-Badcount","Email":"zq8-badcount@example.test","PhoneNumber":"",`+
			`"CreateTime":%q,"Content":"zq8 bad count","SessionID":%d,"URI":"","Count":"lots"}`, ct, hostileSession+1)))
	h.badCount = recordOf(botOddNumber, event.KindLead, hostileSession+1, ct)
	h.want[h.badCount.id] = h.badCount
	for _, spelled := range []string{strconv.Quote(hostileBigSession), hostileBigSession + ".0"} {
		h.AddRaw(botOddNumber, json.RawMessage(fmt.Sprintf(
			`{"Type":"Lead","Name":"Zq8-Bigsession","Email":"","PhoneNumber":"",`+
				`"CreateTime":%q,"Content":"zq8 big session","SessionID":%s,"URI":"","Count":2}`, ct, spelled)))
	}
	big, err := strconv.ParseInt(hostileBigSession, 10, 64)
	if err != nil {
		panic(err)
	}
	r := recordOf(botOddNumber, event.KindLead, big, ct)
	h.want[r.id] = r
	h.floatRead = recordOf(botOddNumber, event.KindLead, hostileFloatSession, ct).id
}

// writeHostileConfig writes the hostile phase's config: the four chatbots with
// initial: skip, a store retention of hostileRetention, NATS JetStream and one webhook.
func writeHostileConfig(t *testing.T, dir, apiURL, natsURL, crmURL, storePath, listen string) string {
	t.Helper()
	var bots strings.Builder
	for i, s := range serials {
		fmt.Fprintf(&bots, "    - {serial: %s, name: Hostile bot %d}\n", s, i+1)
	}
	retry := "{initial_interval: 100ms, max_interval: 1s}"
	body := fmt.Sprintf(`neoagent:
  base_url: %s
  api_key: "${LBFS_API_KEY}"
  timeout: %s
  chatbots:
%spoll: {interval: 1s, lookback: 24h, initial: skip, jitter: 0.1, max_backoff: 2s}
store: {path: %s, retention: %s}
shutdown: {grace: %s}
forwarders:
  - {name: bus, type: nats, url: %s, jetstream: true, stream: %s, user: %s, password: "${LBFS_NATS_PASSWORD}", timeout: 1s, retry: %s}
  - {name: crm, type: webhook, url: %s/hooks/crm, secret: "${LBFS_CRM_SECRET}", timeout: 1s, retry: %s}
http: {listen: "%s"}
log: {level: debug, format: json}
`, apiURL, apiTimeout, bots.String(), storePath, hostileRetention, shutdownGrace,
		natsURL, streamName, natsUser, retry, crmURL, retry, listen)
	path := filepath.Join(dir, "hostile.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// TestHostileAPI is the fault suite's hostile-API phase: the daemon, started on a fresh
// store with initial: skip, polls an API that answers each chatbot's first poll with an
// envelope that says Success but is not an answer, and returns, beside good records, a
// row dated in year 10000 (in UTC), rows older than store.retention, an undecodable row
// on every answer, a Count that is not a number, and one SessionID spelled two ways. The
// daemon is restarted midway (a start prunes the store). It checks that the good records
// all arrive once, that no record already in the API at the first start and no stale row
// is ever delivered, that a repeated bad row is warned about once per run and counted,
// and the usual end state: lost=0, JetStream repeats=0, outbox empty, no dead letters.
func TestHostileAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs the bridge; skipped with -short")
	}
	began := time.Now()
	bin := buildBridge(t)
	built := time.Since(began)
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte(signingKey))

	api := &hostileAPI{Server: leadsim.New(apiKey), want: map[string]record{}, known: map[string]record{}, stale: map[string]record{}}
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)
	nb := leadtest.StartNATS(t, leadtest.NATSOptions{User: natsUser, Password: natsPassword})
	nb.CreateStream(streamName, 30*time.Minute, "neoagent.>")
	crm := newWebhookSink(t, "crm", 0, 0, []byte(signingKey)) // no target faults here

	dir := t.TempDir()
	logDir := dir
	if keep := os.Getenv("LEADBRIDGE_FAULT_LOGS"); keep != "" {
		logDir = filepath.Join(keep, "hostile")
		require.NoError(t, os.MkdirAll(logDir, 0o700))
	}
	storePath := filepath.Join(dir, "leadbridge.db")
	listen := freeAddr(t)
	cfg := writeHostileConfig(t, dir, apiSrv.URL, nb.URL(), crm.srv.URL, storePath, listen)
	env := append(os.Environ(), "LBFS_API_KEY="+apiKey, "LBFS_NATS_PASSWORD="+natsPassword, "LBFS_CRM_SECRET="+secret)
	br := newBridge(t, bin, cfg, logDir, env)

	// The API before the first start.
	now := time.Now()
	for _, s := range serials {
		for i := range hostileKnown {
			api.add(s, now.Add(-time.Duration(i+1)*time.Hour), api.known)
		}
		api.InjectFor(s, leadsim.Fault{Body: firstAnswers[s]})
	}
	api.AddRaw(botBadDate, json.RawMessage(`{"Type":"Appointment","Name":"Zq8-Baddate","Email":"zq8-baddate@example.test",`+
		`"PhoneNumber":"","CreateTime":"`+badDateTime+`","Content":"zq8 bad date","SessionID":880002,"URI":"","Count":1}`))
	api.AddRaw(botMalformed, json.RawMessage(`{"Type":"Lead","Name":"Zq8-Malformed","Email":"zq8-malformed@example.test",`+
		`"CreateTime":"yesterday-ish","Content":"zq8 malformed","SessionID":"x-880003","Count":1}`))
	api.addStale(now.Add(-hostileRetention - 24*time.Hour))
	api.addStale(now.Add(-10 * 24 * time.Hour))

	br.start()
	phase := time.Now()
	var phases []string
	lap := func(name string) {
		phases = append(phases, fmt.Sprintf("%s:%s", name, time.Since(phase).Round(100*time.Millisecond)))
		phase = time.Now()
	}
	// Each chatbot's baseline (its known records, counted in leadbridge_records_total)
	// must be taken before new records come, or they would vanish into it.
	started := waitBaselines(br, listen, hostileStart)
	lap("baseline")

	// Batch 1, and the rows with odd numbers.
	for _, s := range serials {
		for range hostilePerBatch {
			api.add(s, time.Now(), api.want)
		}
	}
	api.addOddNumbers(time.Now())
	batch1 := waitHostile(br, nb, crm, api.want, hostileBatchWait)
	lap("batch1")

	// A restart prunes the store; then batch 2 and one more stale row.
	restart := br.term(termDeadline)
	br.start()
	lap("restart")
	api.addStale(time.Now().Add(-hostileRetention - 48*time.Hour))
	for _, s := range serials {
		for range hostilePerBatch {
			api.add(s, time.Now(), api.want)
		}
	}
	complete := waitHostile(br, nb, crm, api.want, hostileBatchWait)
	lap("batch2")
	// Every poll from here on sees every row; a few more give a stale or known row every
	// chance to be taken, then the targets must go quiet.
	mark := map[string]int{}
	for _, s := range serials {
		mark[s] = api.RequestsFor(s)
	}
	extra := waitPolls(br, api, mark, hostileExtraPolls+1, hostileBatchWait)
	lap("extra_polls")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !crm.quietFor(hostileQuiet) {
		time.Sleep(100 * time.Millisecond)
	}
	skipMetric, metricsErr := scrapeSum(listen, func(line string) bool {
		return strings.HasPrefix(line, "leadbridge_records_skipped_total{") && strings.Contains(line, `chatbot="`+botMalformed+`"`)
	})
	br.check()
	var final termResult
	if p := br.current(); p != nil && p.alive() {
		final = br.term(termDeadline)
	}
	lap("quiet_and_stop")

	// The store, after the process is gone.
	store, err := dedupe.Open(dedupe.Options{Path: storePath, OpenTimeout: 5 * time.Second})
	require.NoError(t, err, "opening the store after the bridge exited")
	depth, err := store.Depth(t.Context())
	require.NoError(t, err)
	deadCount, err := store.DeadCount(t.Context())
	require.NoError(t, err)
	require.NoError(t, store.Close())
	outbox, dead := 0, 0
	for _, n := range depth {
		outbox += n
	}
	for _, n := range deadCount {
		dead += n
	}

	// What the targets got.
	msgs := readStream(nb)
	natsGot, natsRead, natsIssues := tallyStream(msgs)
	wantAll := func(record) bool { return true }
	reports := []targetReport{
		compare("bus", api.want, wantAll, record.describe, natsGot, natsRead),
		compare("crm", api.want, wantAll, record.describe, crm.received(), crm.described()),
	}
	got := []map[string]int{natsGot, crm.received()}
	deliveredOf := func(ids map[string]record) int {
		n := 0
		for _, g := range got {
			for id := range ids {
				n += g[id]
			}
		}
		return n
	}
	lost := 0
	lostBadDate := 0
	for _, r := range reports {
		lost += len(r.lost)
		for _, id := range r.lost {
			if api.want[id].serial == botBadDate {
				lostBadDate++
			}
		}
	}
	flood := deliveredOf(api.known)
	staleDelivered := deliveredOf(api.stale)
	floatRead := natsGot[api.floatRead] + crm.received()[api.floatRead]
	badCount := -1 // the Count the bad-Count row arrived with on NATS; -1: not there
	for _, m := range msgs {
		if m.decodeErr == nil && m.event.ID == api.badCount.id {
			badCount = m.event.Data.Count
		}
	}

	// The logs: the usual leak scan, and the warnings about skipped rows per run.
	needles := []needle{
		{label: "API key", text: apiKey},
		{label: "NATS password", text: natsPassword},
		{label: "webhook secret", text: strings.TrimPrefix(secret, "whsec_")},
		{label: "webhook signing key", text: signingKey},
		{label: "personal data (name, email or content)", text: "zq8", lower: true},
		{label: "personal data (phone)", text: "+1 555 8"},
	}
	scan, err := scanLogs(br.logs(), needles)
	require.NoError(t, err)
	warned, err := skipWarnings(br.logs())
	require.NoError(t, err)

	took := time.Since(began).Round(100 * time.Millisecond)
	summary := fmt.Sprintf("faultsuite hostile records=%d lost=%d repeats: nats=%d crm=%d flood=%d stale=%d float_ids=%d bad_count=%d skip_warnings=%v skip_metric=%g outbox=%d dead=%d took=%s (build:%s %s)",
		len(api.want), lost, reports[0].repeats, reports[1].repeats, flood, staleDelivered, floatRead, badCount,
		warned, skipMetric, outbox, dead, took, built.Round(100*time.Millisecond), strings.Join(phases, " "))
	t.Log(summary)
	fmt.Println(summary)

	// The verdict: each finding of issue 8 on its own line, then the usual end state.
	assert.True(t, started, "not every chatbot took its initial: skip baseline within %s of the first start (leadbridge_records_total{outcome=\"baseline\"})", hostileStart)
	assert.Zero(t, scan.msgs[msgStoreFailed],
		"finding 1 (a bad record stalls its chatbot): the store failed to take %d polled pages (a row with CreateTime %s must be skipped, not fail the page)",
		scan.msgs[msgStoreFailed], badDateTime)
	assert.Zero(t, lostBadDate,
		"finding 1: good records of chatbot %s, beside the row with CreateTime %s, never delivered (counted per target)", botBadDate, badDateTime)
	assert.Zero(t, staleDelivered,
		"finding 2 (stale records): deliveries of rows created before now-store.retention (%s); they must never be announced, even after a restart prunes the store", hostileRetention)
	assert.Zero(t, flood,
		"finding 3 (business error envelope on the first start): deliveries of the %d records already in the API before the first start; an answer like %s is a failed poll and must not spend the initial: skip baseline",
		len(api.known), firstAnswers[botBadDate])
	assert.Equal(t, 0, badCount,
		"finding 8 (bad Count): the record whose Count is \"lots\" must be delivered with count 0 (-1: it never reached NATS)")
	assert.Zero(t, floatRead,
		"finding 8 (SessionID exactness): deliveries under the id of SessionID %d; SessionID %s.0 is the same record as %q",
		hostileFloatSession, hostileBigSession, hostileBigSession)
	for _, bot := range []string{botBadDate, botMalformed} {
		total := 0
		for run, n := range warned[bot] {
			total += n
			assert.LessOrEqual(t, n, 1,
				"finding 8 (repeated bad row): run %d warned %d times about chatbot %s's skipped rows; the API repeats one bad row, so warn once", run+1, n, bot)
		}
		assert.Positive(t, total, "no WARN about chatbot %s's bad row: a row the bridge does not take must be warned about once", bot)
	}
	assert.NoError(t, metricsErr, "scraping /metrics")
	assert.GreaterOrEqual(t, skipMetric, 2.0,
		"finding 8 (repeated bad row): no metric counts chatbot %s's skipped rows (leadbridge_records_skipped_total)", botMalformed)

	assert.True(t, batch1, "batch 1 was not delivered within %s", hostileBatchWait)
	assert.True(t, complete, "batch 2 was not delivered within %s", hostileBatchWait)
	assert.True(t, extra, "not every chatbot was polled %d more times after the last delivery", hostileExtraPolls)
	assert.Empty(t, br.unexpected, "the bridge exited without being asked to")
	for _, tr := range []termResult{restart, final} {
		assert.False(t, tr.hung, "%s: the bridge did not exit within %s of SIGTERM (hang)", tr.log, termDeadline)
		assert.Zero(t, tr.code, "%s: exit code after SIGTERM", tr.log)
	}
	for _, r := range reports {
		for _, p := range r.problems() {
			t.Error(p)
		}
	}
	assert.Zero(t, lost, "lost deliveries")
	assert.Zero(t, reports[0].repeats, "JetStream repeats inside the duplicate window")
	assert.Empty(t, natsIssues, "NATS messages")
	assert.Empty(t, crm.issues(), "crm requests")
	assert.Zero(t, outbox, "outbox depth after the drain and SIGTERM: %v", depth)
	assert.Zero(t, dead, "dead letters: %v", deadCount)
	assert.Empty(t, scan.leaks, "secrets or personal data in the bridge's logs")
	assert.Empty(t, scan.nonJSON, "log lines that are not JSON")
	if t.Failed() {
		t.Logf("logs of the runs (set LEADBRIDGE_FAULT_LOGS=dir to keep them): %s", strings.Join(br.logs(), " "))
	}
}

// waitPolls waits until every chatbot has made n requests beyond from[serial], the bridge
// dies, or d passes, and reports whether they all did.
func waitPolls(br *bridge, api *hostileAPI, from map[string]int, n int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && !br.crashed() {
		done := true
		for _, s := range serials {
			if api.RequestsFor(s) < from[s]+n {
				done = false
			}
		}
		if done {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// waitBaselines waits until every chatbot's baseline shows in the bridge's metrics, the
// bridge dies, or d passes, and reports whether they all did.
func waitBaselines(br *bridge, listen string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && !br.crashed() {
		done := true
		for _, s := range serials {
			n, err := scrapeSum(listen, func(line string) bool {
				return strings.HasPrefix(line, "leadbridge_records_total{") && strings.Contains(line, `outcome="baseline"`) &&
					strings.Contains(line, `chatbot="`+s+`"`)
			})
			if err != nil || n == 0 {
				done = false
				break
			}
		}
		if done {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// waitHostile waits until both targets hold every wanted record, the bridge dies, or d
// passes, and reports whether they do.
func waitHostile(br *bridge, nb *leadtest.NATS, crm *webhookSink, want map[string]record, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && !br.crashed() {
		if holdsAll(crm.received(), want) && holdsAll(streamIDs(nb), want) {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

func holdsAll(got map[string]int, want map[string]record) bool {
	for id := range want {
		if got[id] == 0 {
			return false
		}
	}
	return true
}

// streamIDs counts the stream's messages by Nats-Msg-Id; nil when it cannot be read.
func streamIDs(nb *leadtest.NATS) map[string]int {
	nc, js := nb.Connect()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return nil
	}
	out := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			return nil
		}
		out[m.Header.Get("Nats-Msg-Id")]++
	}
	return out
}

// skipWarnings counts, per chatbot and per run (log file), the WARN lines about a
// skipped record: any message with "skip" in it that names the chatbot.
func skipWarnings(paths []string) (map[string][]int, error) {
	out := map[string][]int{}
	for run, path := range paths {
		for _, s := range serials {
			out[s] = append(out[s], 0)
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			var line struct {
				Level   string `json:"level"`
				Msg     string `json:"msg"`
				Chatbot string `json:"chatbot"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil || line.Level != "WARN" ||
				!strings.Contains(strings.ToLower(line.Msg), "skip") {
				continue
			}
			if counts, ok := out[line.Chatbot]; ok {
				counts[run]++
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return out, nil
}

// scrapeSum sums the values of the bridge's leadbridge_* series whose line matches.
func scrapeSum(listen string, match func(line string) bool) (float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + listen + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "leadbridge_") || !match(line) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}
