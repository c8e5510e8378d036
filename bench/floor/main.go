// Command floor is the idle benchmark's floor (issue 14): the LeadList calls an idle
// daemon makes, and nothing else. It POSTs -calls requests, one chatbot each in turn,
// to the LeadList endpoint with a bare net/http client (keep-alive, the same headers),
// -burst of them every -every, -parallel at a time within a burst, and reads each answer
// to its end through a SHA-256 as a poll does to tell an unchanged answer. No store, no
// schedule, no metrics, no logs. It prints the CPU it used per call after the first
// burst (connections dialled, code paged in), from getrusage(2).
//
// The API key comes from $LBBENCH_API_KEY. The bench package runs it as its own process.
package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// minAnswer is the least size of an answer with the records: a refusal is shorter.
const minAnswer = 1024

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run() error {
	api := flag.String("api", "", "LeadList base URL")
	prefix := flag.String("serials", "benchbot-", "chatbot serials: this prefix and 100000, 100001, ...")
	chatbots := flag.Int("chatbots", 1000, "chatbots to call in turn")
	calls := flag.Int("calls", 500, "calls measured, after one burst unmeasured")
	burst := flag.Int("burst", 8, "calls per burst")
	every := flag.Duration("every", 480*time.Millisecond, "time from one burst to the next")
	parallel := flag.Int("parallel", 1, "calls under way at once within a burst")
	flag.Parse()
	if *api == "" || *burst < 1 || *parallel < 1 || *calls < 1 {
		return errors.New("-api is required; -burst, -parallel and -calls must be positive")
	}
	key := os.Getenv("LBBENCH_API_KEY")
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 16
	next := 0
	call := func(serial string) error {
		body := fmt.Sprintf(`{"serialNumber":%q,"startTime":%q}`, serial, time.Now().UTC().Add(-48*time.Hour).Format("2006-01-02"))
		req, err := http.NewRequest(http.MethodPost, *api+"/chat/Chatbot/LeadList", bytes.NewReader([]byte(body)))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "leadbridge-floor")
		resp, err := transport.RoundTrip(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err == nil && n < minAnswer {
			err = fmt.Errorf("an answer of %d bytes: not the records asked for", n)
		}
		return err
	}
	runBurst := func() error {
		serials := make(chan string, *burst)
		for range *burst {
			serials <- fmt.Sprintf("%s%d", *prefix, 100000+next%*chatbots)
			next++
		}
		close(serials)
		var wg sync.WaitGroup
		errs := make([]error, *parallel)
		for i := range *parallel {
			wg.Go(func() {
				for s := range serials {
					if err := call(s); err != nil && errs[i] == nil {
						errs[i] = err
					}
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	if err := runBurst(); err != nil {
		return err
	}
	var before, after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		return err
	}
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for done := 0; done < *calls; done += *burst {
		<-tick.C
		if err := runBurst(); err != nil {
			return err
		}
	}
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		return err
	}
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	n := (*calls + *burst - 1) / *burst * *burst
	fmt.Printf("calls=%d cpu_us_per_call=%.0f\n", n, float64(cpu.Microseconds())/float64(n))
	return nil
}
