package natsstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Leases are the chatbots' polling leases in the KV bucket P_leases: a key per chatbot
// serial holding the owner (a replica's name), written with a per-key TTL, so that one
// replica at a time polls a chatbot and a dead replica's chatbots are free again once
// its leases expire; and the live replicas in the KV bucket P_replicas, a key per
// replica written with a TTL, so that each can work out its fair share. Safe for
// concurrent use by any number of replicas.
type Leases struct {
	s    *Store
	kv   jetstream.KeyValue
	live jetstream.KeyValue
}

// Leases returns the store's lease buckets, creating them if needed.
func (s *Store) Leases(ctx context.Context, replicas int) (*Leases, error) {
	bucket := func(name string) (jetstream.KeyValue, error) {
		kv, err := retryTimeout(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
			return s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: s.prefix + "_" + name,
				Replicas: max(replicas, 1), Storage: jetstream.FileStorage, History: 1, LimitMarkerTTL: purgeTTL})
		})
		return kv, s.wrap(name, err)
	}
	kv, err := bucket("leases")
	if err != nil {
		return nil, err
	}
	live, err := bucket("replicas")
	if err != nil {
		return nil, err
	}
	return &Leases{s: s, kv: kv, live: live}, nil
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

// ownerUnsafe matches what a replica's name may not hold: it is a key of P_replicas.
var ownerUnsafe = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// NewOwner names this process as a lease owner: its host name, process id and a random
// suffix (a restarted process, or two on one host, are distinct owners), in the
// characters a key allows.
func NewOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", ownerUnsafe.ReplaceAllString(host, "_"), os.Getpid(), hex.EncodeToString(b[:]))
}

// Replica is one replica's side of the leases, under its owner name: what the poller's
// Leaser needs. Safe for concurrent use.
type Replica struct {
	l     *Leases
	owner string
}

// Replica returns the leases as seen by owner (NewOwner's, or any name of letters,
// digits, - and _ that no other replica uses).
func (l *Leases) Replica(owner string) *Replica { return &Replica{l: l, owner: owner} }

// Owner is the replica's name, as Holders reports it.
func (r *Replica) Owner() string { return r.owner }

// Acquire takes or renews the replica's lease on chatbot serial for ttl; false when
// another replica holds it.
func (r *Replica) Acquire(ctx context.Context, serial string, ttl time.Duration) (bool, error) {
	held, _, err := r.l.Acquire(ctx, serial, r.owner, ttl)
	return held, err
}

// Release gives up the replica's lease on chatbot serial, if it holds it.
func (r *Replica) Release(ctx context.Context, serial string) error {
	return r.l.Release(ctx, serial, r.owner)
}

// Join announces the replica as live for ttl (at least 1s; call it again before that
// passes) and returns how many replicas are live, itself included.
func (r *Replica) Join(ctx context.Context, ttl time.Duration) (int, error) {
	op := "join as replica " + r.owner
	if !namePattern.MatchString(r.owner) {
		return 0, r.l.s.wrap(op, errors.New("want an owner of letters, digits, - and _"))
	}
	m := nats.NewMsg("$KV." + r.l.s.prefix + "_replicas." + r.owner)
	m.Data = []byte(time.Now().UTC().Format(time.RFC3339))
	if _, err := r.l.s.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(max(ttl, time.Second))); err != nil {
		return 0, r.l.s.wrap(op, err)
	}
	n := 0
	err := each(ctx, r.l.live, func(jetstream.KeyValueEntry) error {
		n++
		return nil
	})
	if err != nil {
		return 0, r.l.s.wrap(op, err)
	}
	return max(n, 1), nil
}

// Leave removes the replica from the live ones at once (a clean stop), so that the
// others count it out without waiting for its TTL.
func (r *Replica) Leave(ctx context.Context) error {
	err := r.l.live.Purge(ctx, r.owner, jetstream.PurgeTTL(purgeTTL))
	return r.l.s.wrap("leave as replica "+r.owner, err)
}

// Holders returns the owner of every chatbot lease held now, by serial, without creating
// the lease bucket: none before any replica took a lease (for `status` from anywhere).
func (s *Store) Holders(ctx context.Context) (map[string]string, error) {
	kv, err := s.js.KeyValue(ctx, s.prefix+"_leases")
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, s.wrap("leases", err)
	}
	return (&Leases{s: s, kv: kv}).Holders(ctx)
}

// createAttempts bounds how often a bucket or stream is created again after the request
// timed out, each attempt waiting twice as long as the one before, from createFirstWait.
// In a cluster, replicas that create the same one at once (three daemons started
// together) may get no answer though it was created (nats-io/nats.go#949,
// nats-io/nats-server#3677), and a request again finds it: a short first wait keeps
// their start quick, the longer later ones leave a slow cluster its time.
const (
	createAttempts  = 5
	createFirstWait = time.Second
)

// retryTimeout calls create, each call with its own deadline, up to createAttempts times
// while it times out and ctx is not done.
func retryTimeout[T any](ctx context.Context, create func(context.Context) (T, error)) (T, error) {
	wait := createFirstWait
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, wait)
		v, err := create(actx)
		cancel()
		if err == nil || attempt == createAttempts || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return v, err
		}
		wait *= 2
	}
}
