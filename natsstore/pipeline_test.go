package natsstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// lastValues reads what kv.Get reads, key for key, in batches: values written once or
// twice, keys deleted, purged, purged with a marker that expires, never written, more
// keys than one batch holds; and key by key where the bucket allows no direct gets.
func TestLastValuesReadsWhatGetReads(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "lv", LimitMarkerTTL: time.Minute})
	require.NoError(t, err)
	s := &Store{js: js, timeout: 5 * time.Second}

	var keys []string
	for i := range multiGetMax + 300 {
		k := fmt.Sprintf("k%04d", i)
		keys = append(keys, k)
		switch i % 6 {
		case 0: // never written
		case 1:
			_, err = kv.Put(ctx, k, []byte("v"+k))
		case 2:
			_, err = kv.Put(ctx, k, []byte("old"))
			if err == nil {
				_, err = kv.Put(ctx, k, []byte("new"+k))
			}
		case 3:
			_, err = kv.Put(ctx, k, []byte("gone"))
			if err == nil {
				err = kv.Delete(ctx, k)
			}
		case 4:
			_, err = kv.Put(ctx, k, []byte("gone"))
			if err == nil {
				err = kv.Purge(ctx, k, jetstream.PurgeTTL(time.Minute))
			}
		case 5:
			_, err = kv.Create(ctx, k, []byte("ttl"+k), jetstream.KeyTTL(time.Hour))
		}
		require.NoError(t, err, k)
	}
	want := map[string]kvValue{}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err == nil {
			want[k] = kvValue{rev: e.Revision(), value: e.Value()}
		} else {
			require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
		}
	}
	require.Len(t, want, 3*len(keys)/6, "the fixture has values")

	got, err := s.lastValues(ctx, kv, keys)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	// The bucket's stream without direct gets: the batch is refused, read key by key.
	st, err := js.Stream(ctx, "KV_lv")
	require.NoError(t, err)
	cfg := st.CachedInfo().Config
	cfg.AllowDirect = false
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
	plain, err := js.KeyValue(ctx, "lv")
	require.NoError(t, err)
	_, err = s.multiGet(ctx, "lv", keys[:10])
	require.ErrorIs(t, err, errNoMultiGet)
	got, err = s.lastValues(ctx, plain, keys)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}
