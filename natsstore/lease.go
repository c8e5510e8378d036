package natsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Leases are the chatbots' polling leases in the KV bucket P_leases: a key per chatbot
// serial holding the owner (a replica's name), written with a per-key TTL, so that one
// replica at a time polls a chatbot and a dead replica's chatbots are free again once
// its leases expire. Safe for concurrent use by any number of replicas.
type Leases struct {
	s  *Store
	kv jetstream.KeyValue
}

// Leases returns the store's lease bucket, creating it if needed.
func (s *Store) Leases(ctx context.Context, replicas int) (*Leases, error) {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: s.prefix + "_leases",
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage, History: 1, LimitMarkerTTL: purgeTTL})
	if err != nil {
		return nil, s.wrap("leases", err)
	}
	return &Leases{s: s, kv: kv}, nil
}

// Acquire takes or renews the lease on chatbot serial for owner for ttl (at least 1s):
// it is taken when nobody holds it (or the holder's lease expired), renewed when owner
// holds it. held is false when another owner holds it; then holder names it.
func (l *Leases) Acquire(ctx context.Context, serial, owner string, ttl time.Duration) (held bool, holder string, err error) {
	op := "lease " + serial
	if !namePattern.MatchString(serial) || owner == "" {
		return false, "", l.s.wrap(op, errors.New("want a serial of letters, digits, - and _, and an owner"))
	}
	ttl = max(ttl, time.Second)
	for {
		e, err := l.kv.Get(ctx, serial)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = l.kv.Create(ctx, serial, []byte(owner), jetstream.KeyTTL(ttl))
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // another owner came first: read who
			}
			if err != nil {
				return false, "", l.s.wrap(op, err)
			}
			return true, owner, nil
		case err != nil:
			return false, "", l.s.wrap(op, err)
		case string(e.Value()) != owner:
			return false, string(e.Value()), nil
		}
		// Renew: the same value with a fresh TTL, only if nobody wrote it since.
		m := nats.NewMsg("$KV." + l.s.prefix + "_leases." + serial)
		m.Data = []byte(owner)
		_, err = l.s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(e.Revision()), jetstream.WithMsgTTL(ttl))
		if isWrongLast(err) {
			continue // it expired or changed hands meanwhile: look again
		}
		if err != nil {
			return false, "", l.s.wrap(op, fmt.Errorf("renew: %w", err))
		}
		return true, owner, nil
	}
}

// Release gives up owner's lease on chatbot serial, if owner holds it, so that another
// replica may take it at once.
func (l *Leases) Release(ctx context.Context, serial, owner string) error {
	e, err := l.kv.Get(ctx, serial)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return l.s.wrap("release lease "+serial, err)
	}
	if string(e.Value()) != owner {
		return nil
	}
	err = l.kv.Purge(ctx, serial, jetstream.LastRevision(e.Revision()), jetstream.PurgeTTL(purgeTTL))
	if err != nil && !isWrongLast(err) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return l.s.wrap("release lease "+serial, err)
	}
	return nil
}

// Holders returns the owner of every chatbot lease held now, by serial (for status).
func (l *Leases) Holders(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	err := each(ctx, l.kv, func(e jetstream.KeyValueEntry) error {
		out[e.Key()] = string(e.Value())
		return nil
	})
	return out, l.s.wrap("leases", err)
}
