package dedupe

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SeenKey is one seen key as EachSeen hands it over, for copying the store elsewhere.
type SeenKey struct {
	Key      string    // the record's identity key (event.Lead.Key)
	Created  time.Time // the record's CreatedAt
	LastSeen time.Time // when a poll last returned it
	Hash     []byte    // its content hash
}

// EachSeen calls fn with every seen key, in key order, in one read transaction (`store
// copy`). A malformed value is reported with its key's position, never its content.
func (s *Store) EachSeen(ctx context.Context, fn func(SeenKey) error) error {
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSeen)
		if b == nil {
			return nil
		}
		n := 0
		return b.ForEach(func(k, raw []byte) error {
			n++
			v, err := decodeSeen(raw)
			if err != nil {
				return fmt.Errorf("seen key #%d: %w", n, err)
			}
			return fn(SeenKey{Key: string(k), Created: v.created, LastSeen: v.lastSeen, Hash: append([]byte(nil), v.hash...)})
		})
	})
	return s.wrap("read seen keys", err)
}
