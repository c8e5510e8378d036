// Command plain is the baseline of the pipeline benchmark (issue 14): the same work as
// `leadbridge once` done by a plain program with the same libraries and no durability
// beyond the seen keys. It makes one LeadList request, decodes the whole answer, marks
// the records seen in bbolt 1,000 keys per transaction, publishes each new record's
// CloudEvent to JetStream with PublishAsync and Nats-Msg-Id, and posts it to one webhook
// with 32 keep-alive workers. It does not retry: any failed delivery makes it exit 1.
//
// The API key comes from $LBBENCH_API_KEY (never a flag, so it stays out of ps). On
// success it prints one line of counts and exits 0. The bench package runs it as its own
// process beside `leadbridge once`.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
)

// apiKeyEnv names the environment variable holding the LeadList API key.
const apiKeyEnv = "LBBENCH_API_KEY"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "plain:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	api, serial, natsURL, webhook, store string
	workers, batch                       int
	timeout                              time.Duration
}

func run() error {
	var o options
	flag.StringVar(&o.api, "api", "", "LeadList base URL")
	flag.StringVar(&o.serial, "serial", "", "chatbot serial")
	flag.StringVar(&o.natsURL, "nats", "", "NATS URL (the server must have a stream over neoagent.>)")
	flag.StringVar(&o.webhook, "webhook", "", "webhook URL")
	flag.StringVar(&o.store, "store", "", "bbolt file")
	flag.IntVar(&o.workers, "workers", 32, "webhook workers")
	flag.IntVar(&o.batch, "batch", 1000, "seen keys per bbolt transaction")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "time limit of the whole run")
	flag.Parse()
	for name, v := range map[string]string{"-api": o.api, "-serial": o.serial, "-nats": o.natsURL, "-webhook": o.webhook, "-store": o.store} {
		if v == "" {
			return fmt.Errorf("%s is required", name)
		}
	}
	key := os.Getenv(apiKeyEnv)
	if key == "" {
		return fmt.Errorf("$%s is empty", apiKeyEnv)
	}
	if o.workers < 1 || o.batch < 1 {
		return errors.New("-workers and -batch must be at least 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	leads, err := fetch(ctx, o, key)
	if err != nil {
		return err
	}
	db, err := bolt.Open(o.store, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("store %s: %w", o.store, err)
	}
	defer db.Close()
	nc, err := natsgo.Connect(o.natsURL)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	var pubErrs atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *natsgo.Msg, error) {
		pubErrs.Add(1)
	}))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	// Dedupe feeds both targets batch by batch, as each transaction commits.
	toNATS := make(chan []event.Event, 4)
	toHook := make(chan event.Event, 4*o.batch)
	var wg sync.WaitGroup
	var published atomic.Int64
	var natsErr error
	wg.Go(func() { natsErr = publish(ctx, js, toNATS, &published) })
	var posted, hookFails atomic.Int64
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: o.workers, MaxIdleConnsPerHost: o.workers, IdleConnTimeout: time.Minute,
	}}
	for range o.workers {
		wg.Go(func() {
			for ev := range toHook {
				if err := post(ctx, client, o.webhook, ev); err != nil {
					if hookFails.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "plain: webhook:", err)
					}
					continue
				}
				posted.Add(1)
			}
		})
	}
	fresh, dedupeErr := dedupe(db, o.serial, leads, o.batch, func(evs []event.Event) {
		toNATS <- evs
		for _, ev := range evs {
			toHook <- ev
		}
	})
	close(toNATS)
	close(toHook)
	wg.Wait()
	switch {
	case dedupeErr != nil:
		return dedupeErr
	case natsErr != nil:
		return natsErr
	case pubErrs.Load() > 0:
		return fmt.Errorf("nats: %d JetStream publishes failed", pubErrs.Load())
	case hookFails.Load() > 0:
		return fmt.Errorf("webhook: %d posts failed", hookFails.Load())
	}
	fmt.Printf("plain: records=%d new=%d published=%d posted=%d\n", len(leads), fresh, published.Load(), posted.Load())
	return nil
}

// fetch makes the one LeadList request (the last two days to tomorrow) and decodes it.
func fetch(ctx context.Context, o options, key string) ([]event.Lead, error) {
	now := time.Now().UTC()
	body, err := json.Marshal(map[string]string{
		"serialNumber": o.serial,
		"startTime":    now.Add(-48 * time.Hour).Format(time.DateOnly),
		"endTime":      now.Add(24 * time.Hour).Format(time.DateOnly),
	})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.api+"/chat/Chatbot/LeadList", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("leadlist: %w", err)
	}
	req.Header.Set("Authorization", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("leadlist: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("leadlist: HTTP %d", resp.StatusCode)
	}
	var page struct {
		Data    []leadsim.Record
		Success bool
		Code    int
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, fmt.Errorf("leadlist: decode: %w", err)
	}
	if !page.Success {
		return nil, fmt.Errorf("leadlist: API refused the request: code %d", page.Code)
	}
	leads := make([]event.Lead, len(page.Data))
	for i, r := range page.Data {
		kind, err := event.ParseKind(r.Type)
		if err != nil {
			return nil, fmt.Errorf("leadlist: record %d: Type: %w", i, err)
		}
		created, err := time.Parse(time.RFC3339Nano, r.CreateTime)
		if err != nil {
			return nil, fmt.Errorf("leadlist: record %d: CreateTime is not RFC 3339", i)
		}
		leads[i] = event.Lead{
			Chatbot: o.serial, ChatbotName: o.serial, Kind: kind, Name: r.Name, Email: r.Email,
			Phone: r.PhoneNumber, Content: r.Content, SessionID: r.SessionID, URI: r.URI,
			Count: r.Count, CreatedAt: created,
		}
	}
	return leads, nil
}

// dedupe marks the leads seen, batch keys per transaction, and hands each committed
// batch's new events to emit. It returns how many were new.
func dedupe(db *bolt.DB, serial string, leads []event.Lead, batch int, emit func([]event.Event)) (int, error) {
	bucket := []byte("seen/" + serial)
	fresh := 0
	for start := 0; start < len(leads); start += batch {
		chunk := leads[start:min(start+batch, len(leads))]
		var evs []event.Event
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucket)
			if err != nil {
				return err
			}
			for _, l := range chunk {
				ev := event.NewCreated(l)
				if b.Get([]byte(ev.ID)) != nil {
					continue
				}
				if err := b.Put([]byte(ev.ID), []byte(l.ContentHash())); err != nil {
					return err
				}
				evs = append(evs, ev)
			}
			return nil
		})
		if err != nil {
			return fresh, fmt.Errorf("store: %w", err)
		}
		fresh += len(evs)
		emit(evs)
	}
	return fresh, nil
}

// stallWait is how long a publish waits while the client's 4,000 unacknowledged async
// publishes are outstanding: backpressure, not a failure.
const stallWait = 30 * time.Second

// publish sends every event to JetStream without waiting for each ack, then waits for
// all of them.
func publish(ctx context.Context, js jetstream.JetStream, in <-chan []event.Event, published *atomic.Int64) error {
	var firstErr error
	for evs := range in {
		for _, ev := range evs {
			if firstErr != nil {
				continue // keep draining so the producer never blocks
			}
			body, err := json.Marshal(ev)
			if err != nil {
				firstErr = err
				continue
			}
			msg := &natsgo.Msg{Subject: "neoagent." + ev.Chatbot() + "." + string(ev.Kind()), Data: body, Header: natsgo.Header{}}
			msg.Header.Set("Content-Type", "application/cloudevents+json")
			msg.Header.Set("Ce-Specversion", ev.SpecVersion)
			msg.Header.Set("Ce-Id", ev.ID)
			msg.Header.Set("Ce-Source", ev.Source)
			msg.Header.Set("Ce-Type", ev.Type)
			msg.Header.Set("Ce-Time", ev.Time.UTC().Format(time.RFC3339Nano))
			msg.Header.Set("Ce-Subject", ev.Subject)
			if _, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(ev.ID), jetstream.WithStallWait(stallWait)); err != nil {
				firstErr = fmt.Errorf("nats: publish: %w", err)
				continue
			}
			published.Add(1)
		}
	}
	if firstErr != nil {
		return firstErr
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nats: waiting for %d acks: %w", js.PublishAsyncPending(), ctx.Err())
	}
}

// post delivers one event to the webhook as a CloudEvent, with the Standard Webhooks id
// and timestamp headers; any status but 2xx is a failure.
func post(ctx context.Context, client *http.Client, url string, ev event.Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "leadbridge-plain")
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("Webhook-Id", ev.ID)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d for event %s", resp.StatusCode, ev.ID)
	}
	return nil
}
