package poller

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// manyRecords is n distinct records, every 1,000th one undecodable (no Type).
func manyRecords(n int) []string {
	out := make([]string, n)
	base := time.Date(2023, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range out {
		typ := `"Type":"Lead",`
		if i%1000 == 999 {
			typ = ""
		}
		out[i] = fmt.Sprintf(`{%s"Name":"Visitor %d","CreateTime":%q,"SessionID":%d,"Count":1}`,
			typ, i, base.Add(time.Duration(i)*time.Second).Format(time.RFC3339), i)
	}
	return out
}

func TestStreamHandsOverChunks(t *testing.T) {
	srv := newLeadListServer(t)
	srv.script(mainSite.Serial, reply{body: okBody(manyRecords(2500)...)}, reply{body: okBody()})
	c := srv.client(10 * time.Second)
	c.SpoolDir = t.TempDir()

	var chunks []Page
	require.NoError(t, c.Stream(context.Background(), mainSite, Window{}, func(p Page) error {
		chunks = append(chunks, p)
		return nil
	}))
	require.Len(t, chunks, 3)
	for i, want := range []int{999, 999, 500} {
		assert.Len(t, chunks[i].Leads, want)
		assert.Equal(t, i == 2, chunks[i].last)
	}
	require.Len(t, chunks[1].Skipped, 1)
	assert.Equal(t, 1999, chunks[1].Skipped[0].Index, "indices count from the start of Data")
	assert.Equal(t, "Visitor 1000", chunks[1].Leads[0].Name)

	// An empty Data is one empty, last chunk: it completes the page.
	chunks = nil
	require.NoError(t, c.Stream(context.Background(), mainSite, Window{}, func(p Page) error {
		chunks = append(chunks, p)
		return nil
	}))
	require.Len(t, chunks, 1)
	assert.Empty(t, chunks[0].Leads)
	assert.True(t, chunks[0].last)
	entries, err := os.ReadDir(c.SpoolDir)
	require.NoError(t, err)
	assert.Empty(t, entries, "the spool file is removed")
}

// A large first page (initial: skip) whose envelope, after Data as the API sends it,
// refuses the request must leave nothing taken and the baseline unspent, however many
// chunks its Data holds; the next good page is then all baseline, across its chunks.
func TestPollStreamsALargePageOnlyOnceItsEnvelopeIsGood(t *testing.T) {
	records := manyRecords(2500)
	refused := `{"Data":[` + strings.Join(records, ",") + `],"Success":true,"Code":200,"Success":false,"Code":500,"Message":"busy"}`
	truncated := okBody(records...)
	truncated = truncated[:len(truncated)-1] // the closing brace never came
	srv := newLeadListServer(t)
	srv.script(mainSite.Serial, reply{body: refused}, reply{body: truncated}, reply{body: okBody(records...)},
		reply{body: okBody(append(records, manyRecords(2501)[2500])...)})
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialSkip})
	l := &Loop{Client: srv.client(10 * time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Now: func() time.Time { return pollNow }, DropEvents: true}

	for _, want := range []string{"code 500", "unexpected end of JSON input"} {
		res, err := l.PollOnce(context.Background(), mainSite)
		require.ErrorContains(t, err, want)
		assert.Equal(t, event.Ingested{}, res)
		st := chatbotStates(t, store)[mainSite.Serial]
		assert.Zero(t, st.Seen, "nothing of a failed page is taken")
		assert.False(t, st.Initialized, "a failed page does not spend the baseline")
	}

	res, err := l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Baseline: 2498}, res)
	assert.Empty(t, leadtest.Pending(t, store, testForwarder))
	assert.True(t, chatbotStates(t, store)[mainSite.Serial].Initialized)

	res, err = l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	assert.Equal(t, 1, res.New)
	assert.Empty(t, res.Events, "DropEvents keeps only the counts")
	require.Len(t, leadtest.Pending(t, store, testForwarder), 1)
	assert.Equal(t, strconv.Itoa(2500), strconv.FormatInt(leadtest.Pending(t, store, testForwarder)[0].Event.Data.SessionID, 10))
}
