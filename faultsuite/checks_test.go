package faultsuite

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/leadbridge/leadbridge/event"
)

// record is one record the suite put into the simulated API, and the event id it must
// be delivered under.
type record struct {
	serial  string
	kind    event.Kind
	session int64
	id      string // event.Lead.ID() of the record: its key from serial, Type, SessionID, CreateTime
}

// describe is the record as a CloudEvent target should read it back (see describe for
// events).
func (r record) describe() string {
	return fmt.Sprintf("%s|%s|%d|%s%s.%s", r.serial, r.kind, r.session, event.TypePrefix, r.kind, event.ActionCreated)
}

// describeSlack is the record as the Slack stand-in reads it from a single message: the
// kind (from the text) and the session (from the context block). A digest names ids
// only, so its records are counted without this check.
func (r record) describeSlack() string {
	return fmt.Sprintf("%s|%d", r.kind, r.session)
}

// targetReport is what one target got against what it should have got.
type targetReport struct {
	name     string
	want     int      // records the target's filters let through
	lost     []string // wanted but never delivered
	repeats  int      // deliveries beyond the first, over all event ids
	excluded []string // delivered although the target's filters exclude the record
	unknown  []string // delivered ids that belong to no record
	mismatch []string // delivered events whose fields contradict the record of their id
}

// compare checks a target's deliveries (accepted deliveries per event id) against the
// records it wants, and what it read of each event (id → text) against what the record
// of that id says (as).
func compare(name string, records map[string]record, wants func(record) bool, as func(record) string,
	got map[string]int, read map[string]string,
) targetReport {
	rep := targetReport{name: name}
	for id, r := range records {
		if !wants(r) {
			continue
		}
		rep.want++
		if got[id] == 0 {
			rep.lost = append(rep.lost, id)
		}
	}
	for id, n := range got {
		rep.repeats += n - 1
		r, ok := records[id]
		switch {
		case !ok:
			rep.unknown = append(rep.unknown, id)
		case !wants(r):
			rep.excluded = append(rep.excluded, id)
		}
		if s, ok2 := read[id]; ok && ok2 && s != as(r) {
			rep.mismatch = append(rep.mismatch, fmt.Sprintf("%s: got %s, want %s", id, s, as(r)))
		}
	}
	sort.Strings(rep.lost)
	sort.Strings(rep.excluded)
	sort.Strings(rep.unknown)
	sort.Strings(rep.mismatch)
	return rep
}

// problems lists what is wrong with the target's deliveries, at most a few ids each.
func (r targetReport) problems() []string {
	var out []string
	add := func(what string, ids []string) {
		if len(ids) > 0 {
			out = append(out, fmt.Sprintf("%s: %d %s, e.g. %s", r.name, len(ids), what, strings.Join(first(ids, 3), ", ")))
		}
	}
	add("records lost (never delivered)", r.lost)
	add("records delivered although the filters exclude them", r.excluded)
	add("deliveries of an event id that belongs to no record", r.unknown)
	add("deliveries whose fields contradict the record of their id", r.mismatch)
	return out
}

func first[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// needle is a string that must not appear in any log line.
type needle struct {
	label string
	text  string // compared with the line lower-cased when lower is set
	lower bool
}

// logScan is what scanning the bridge's logs found.
type logScan struct {
	lines   int
	errors  int            // lines at level ERROR
	msgs    map[string]int // lines by message
	retries map[string]int // "delivery failed, will retry" lines by forwarder
	leaks   []string       // "file:line: label"
	nonJSON []string       // "file:line: start of the line"
}

// Log messages the suite counts to show that a fault was felt.
const (
	msgRetry       = "delivery failed, will retry"
	msgPollFailed  = "LeadList poll failed"
	msgSkipped     = "skipped undecodable LeadList record"
	msgStoreFailed = "store failed to take polled records"
)

// scanLogs reads every log file line by line: each must be a JSON object (log.format
// json), and none may contain a needle.
func scanLogs(paths []string, needles []needle) (logScan, error) {
	res := logScan{msgs: map[string]int{}, retries: map[string]int{}}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return res, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		n := 0
		for sc.Scan() {
			n++
			res.lines++
			line := sc.Text()
			where := fmt.Sprintf("%s:%d", filepath.Base(path), n)
			var obj map[string]any
			if err := json.Unmarshal([]byte(line), &obj); err != nil {
				res.nonJSON = append(res.nonJSON, where+": "+line[:min(len(line), 120)])
			} else {
				if obj["level"] == "ERROR" {
					res.errors++
				}
				msg, _ := obj["msg"].(string)
				res.msgs[msg]++
				if fwd, _ := obj["forwarder"].(string); msg == msgRetry {
					res.retries[fwd]++
				}
			}
			lowered := strings.ToLower(line)
			for _, nd := range needles {
				hay := line
				if nd.lower {
					hay = lowered
				}
				if strings.Contains(hay, nd.text) {
					res.leaks = append(res.leaks, where+": "+nd.label)
				}
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return res, fmt.Errorf("%s: %w", path, err)
		}
	}
	return res, nil
}
