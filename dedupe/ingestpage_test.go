package dedupe_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
)

// parts is a read function for IngestPage that hands over each part in turn, keeping
// take's results, and fails with failAfter's error once that many parts are taken.
func parts(got *[]event.Ingested, failAfter int, fail error, ps ...[]event.Lead) func(func([]event.Lead, bool) (event.Ingested, error)) error {
	return func(take func([]event.Lead, bool) (event.Ingested, error)) error {
		for i, p := range ps {
			if fail != nil && i == failAfter {
				return fail
			}
			res, err := take(p, false)
			if err != nil {
				return err
			}
			*got = append(*got, res)
		}
		return nil
	}
}

func TestIngestPageBaselineSpansItsParts(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, func(o *dedupe.Options) { o.Initial = dedupe.InitialSkip })
	all := leads(bot, 1, 5)

	// A first page cut short: its first part is taken as baseline, and the chatbot is not
	// initialized, so the next poll's page is still a baseline.
	boom := errors.New("the body broke off")
	var got []event.Ingested
	require.ErrorIs(t, s.IngestPage(t.Context(), bot, parts(&got, 1, boom, all[:2], all[2:])), boom)
	require.Equal(t, []event.Ingested{{Baseline: 2}}, got)
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.False(t, bots[bot].Initialized)

	// The whole page in three parts (one record repeated across parts): still all baseline,
	// and only then initialized.
	got = nil
	require.NoError(t, s.IngestPage(t.Context(), bot, parts(&got, 0, nil, all[:3], all[2:4], all[4:])))
	assert.Equal(t, []event.Ingested{{Duplicate: 2, Baseline: 1}, {Baseline: 1}, {Baseline: 1}}, got)
	bots, err = s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.True(t, bots[bot].Initialized)
	assert.Equal(t, 5, bots[bot].Seen)
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Empty(t, depth, "a baseline sends nothing")

	// After it, new records in later parts are new, each part's events reported with it.
	got = nil
	next := leads(bot, 6, 2)
	require.NoError(t, s.IngestPage(t.Context(), bot, parts(&got, 0, nil, all, next[:1], next[1:])))
	require.Len(t, got, 3)
	assert.Equal(t, 5, got[0].Duplicate)
	assert.Equal(t, []string{next[0].ID()}, ids(got[1].Events))
	assert.Equal(t, []string{next[1].ID()}, ids(got[2].Events))
	assert.Len(t, pending(t, s, "bus"), 2)
}

func TestIngestPageLastPartCompletesThePage(t *testing.T) {
	s := open(t, dbPath(t), func(o *dedupe.Options) { o.Initial = dedupe.InitialSkip })
	all := leads(bot, 1, 3)
	err := s.IngestPage(t.Context(), bot, func(take func([]event.Lead, bool) (event.Ingested, error)) error {
		res, err := take(all[:2], false)
		require.NoError(t, err)
		assert.Equal(t, event.Ingested{Baseline: 2}, res)
		res, err = take(all[2:], true)
		require.NoError(t, err)
		assert.Equal(t, event.Ingested{Baseline: 1}, res)
		bots, err := s.Chatbots(t.Context())
		require.NoError(t, err)
		assert.True(t, bots[bot].Initialized, "the last part's transaction marks the chatbot initialized")
		_, err = take(nil, false)
		assert.ErrorContains(t, err, "after the page failed or ended")
		return nil
	})
	require.NoError(t, err)
}

func TestIngestPageRejectedIndexCountsFromThePage(t *testing.T) {
	s := open(t, dbPath(t), nil)
	bad := leads(bot, 3, 1)
	bad[0].Chatbot = "another"
	var got []event.Ingested
	require.NoError(t, s.IngestPage(t.Context(), bot, parts(&got, 0, nil, leads(bot, 1, 2), bad)))
	require.Len(t, got, 2)
	require.Len(t, got[1].Rejected, 1)
	assert.Equal(t, 2, got[1].Rejected[0].Index)
}
