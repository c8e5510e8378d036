package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// chromium finds Debian's chromium (the package .ci/run installs). Without it the test
// fails, so that CI cannot pass without having run it; LEADBRIDGE_SKIP_BROWSER=1 skips
// it on a machine that has no browser.
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("LEADBRIDGE_SKIP_BROWSER") == "1" {
		t.Skip("LEADBRIDGE_SKIP_BROWSER=1")
	}
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("the browser test needs Chromium: apt-get install -y chromium (or set LEADBRIDGE_SKIP_BROWSER=1 to skip it)")
	return ""
}

// screenshotDir is where the test saves its screenshots: docs/console when
// LEADBRIDGE_UPDATE_SCREENSHOTS=1 (to refresh the README's), else a temporary directory.
func screenshotDir(t *testing.T) string {
	if os.Getenv("LEADBRIDGE_UPDATE_SCREENSHOTS") == "1" {
		dir, err := filepath.Abs("../../docs/console")
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		return dir
	}
	return t.TempDir()
}

// TestConsoleInABrowser runs the daemon against stand-in peers and drives the web
// console with headless Chromium: log in, see a delivered lead in Activity, replay a dead
// letter with its button and see it delivered, resume a paused forwarder.
func TestConsoleInABrowser(t *testing.T) {
	exe := chromium(t)
	const token = "console-browser-test-token-7f3a"
	api, apiURL := leadtest.StartAPI(t, testKey)
	good := leadtest.NewSink(t, nil)
	bad := leadtest.NewSink(t, nil)
	bad.AnswerAll(http.StatusBadRequest) // dead-letters at once
	gone := leadtest.NewSink(t, nil)
	gone.AnswerAll(http.StatusGone) // pauses its forwarder
	addr := freeAddr(t)
	dir := t.TempDir()
	t.Setenv("LB_TEST_KEY", testKey)
	t.Setenv("LB_ADMIN_TOKEN", token)
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `
neoagent:
  base_url: %s
  api_key: ${LB_TEST_KEY}
  chatbots: [{serial: %s, name: Main site}]
poll: {interval: 1s, initial: emit}
store: {path: %s/lb.db}
forwarders:
  - {name: crm, type: webhook, url: "%s/hook"}
  - {name: archive, type: webhook, url: "%s/hook"}
  - {name: sales-hook, type: webhook, url: "%s/hook"}
http: {listen: "%s", admin_token: "${LB_ADMIN_TOKEN}"}
`, apiURL, testSerial, dir, good.URL, bad.URL, gone.URL, addr), 0o600))
	lead := api.Generate(testSerial, time.Now().Add(-time.Minute))
	startDaemon(t, cfg, addr)
	require.Eventually(t, func() bool { return good.Count() == 1 && bad.Count() == 1 && gone.Count() >= 1 },
		10*time.Second, 20*time.Millisecond, "the lead reached all three targets once")
	eventID := good.IDs()[0]

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1280, 900))...)
	defer cancelAlloc()
	browser, cancel := chromedp.NewContext(alloc)
	defer cancel()
	require.NoError(t, chromedp.Do(browser), "start Chromium")
	base := "http://" + addr

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 15*time.Second)
		defer cancel()
		require.NoError(t, chromedp.Do(ctx, steps...), what)
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 15*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, sel)
		return s
	}
	// until reloads path until the text of sel contains every one of want.
	until := func(path, sel string, want ...string) {
		t.Helper()
		var last atomic.Value // what the page last showed, for the failure message
		last.Store("")
		ok := assert.Eventually(t, func() bool { // runs in another goroutine: no require here
			ctx, cancel := context.WithTimeout(browser, 5*time.Second)
			defer cancel()
			if err := chromedp.Do(ctx, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
				last.Store(err.Error())
				return false
			}
			s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
			if err != nil {
				last.Store(err.Error())
				return false
			}
			last.Store(s)
			for _, w := range want {
				if !strings.Contains(s, w) {
					return false
				}
			}
			return true
		}, 15*time.Second, 100*time.Millisecond)
		require.True(t, ok, "%s %s shows %q; it shows:\n%s", path, sel, want, last.Load())
	}
	// tabTo presses Tab until the element sel selects has the focus, as a keyboard user would.
	tabTo := func(sel string) {
		t.Helper()
		for range 80 {
			do("press Tab", chromedp.KeyEvent(kb.Tab))
			on, err := chromedp.Run(browser, chromedp.Evaluate[bool](`document.activeElement.matches(`+strconv.Quote(sel)+`)`))
			require.NoError(t, err)
			if on {
				return
			}
		}
		t.Fatalf("80 presses of Tab never reached %s", sel)
	}
	shots := screenshotDir(t)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644))
	}

	// Log in: the console sends a stranger to the login form first.
	do("open the console", chromedp.Navigate(base+"/ui/activity"), chromedp.WaitVisible(chromedp.ID("token")))
	shot("login")
	do("log in with the keyboard", chromedp.SendKeys(chromedp.ID("token"), token+kb.Enter), chromedp.WaitVisible(chromedp.ID("activity")))
	loc, err := chromedp.Run(browser, chromedp.Location())
	require.NoError(t, err)
	assert.Equal(t, base+"/ui/activity", loc, "back where the login began")

	// The delivered lead is in Activity, and its page shows the CloudEvent.
	until("/ui/activity?forwarder=crm&outcome=delivered", "#activity", eventID[:11], "crm", "delivered")
	until("/ui/activity", "#activity", "archive", "dead", "sales-hook", "retrying", "HTTP 400")
	shot("activity")
	do("open the event", chromedp.Click(chromedp.CSS(`a[href="/ui/events/`+eventID+`"]`)), chromedp.WaitVisible(chromedp.CSS("pre.json")))
	assert.Contains(t, text("pre.json"), lead.Email, "the event page shows the lead")
	assert.Contains(t, text("#attempts"), "archive")
	shot("event")

	// The overview says what is wrong: a paused forwarder, a dead letter.
	until("/ui/", "#forwarders", "sales-hook", "paused", "archive", "failing", "crm", "ok")
	shot("overview")

	// Replay the dead letter with its button once the target is fixed; it gets delivered.
	bad.AnswerAll(0)
	until("/ui/dead", "#dead", "archive", "HTTP 400")
	shot("dead-letters")
	do("replay", chromedp.Click(chromedp.CSS(`button[formaction="/ui/dead/replay"][name="one"][value="archive/`+eventID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	assert.Contains(t, text(".flash"), "Replayed 1 dead letter")
	require.Eventually(t, func() bool { return bad.Count() == 2 }, 10*time.Second, 20*time.Millisecond, "the replay is delivered")
	assert.Equal(t, eventID, bad.IDs()[1])
	until("/ui/activity?forwarder=archive&outcome=delivered", "#activity", eventID[:11], "delivered")
	until("/ui/dead", "#dead", "No dead letters")

	// Resume the paused forwarder once its target is back; what it kept goes out.
	gone.AnswerAll(0)
	before := gone.Count()
	until("/ui/", "#forwarders", "paused")
	tabTo(`form[action="/ui/forwarders/sales-hook/resume"] button`)
	do("resume with the keyboard", chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.CSS(".flash")))
	assert.Contains(t, text(".flash"), `Resumed forwarder "sales-hook"`)
	require.Eventually(t, func() bool { return gone.Count() == before+1 }, 10*time.Second, 20*time.Millisecond,
		"the paused delivery goes out after the resume")
	until("/ui/", "#forwarders", "sales-hook")
	assert.NotContains(t, text("#forwarders"), "paused")
	until("/ui/activity?forwarder=sales-hook&outcome=delivered", "#activity", eventID[:11])

	// Readable on a phone.
	do("phone", chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("forwarders")))
	shot("overview-phone")
	for _, path := range []string{"/ui/", "/ui/activity", "/ui/dead", "/ui/events/" + eventID} {
		do("phone "+path, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS("main")))
		fits, err := chromedp.Run(browser, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
		require.NoError(t, err)
		assert.True(t, fits, "%s fits a phone's width: its wide tables scroll by themselves", path)
	}

	// Auto-refresh reloads an idle page, but not one where dead letters are ticked. A page
	// that reloads loses the mark set on it; of two tabs, the one opened second reloading
	// proves that the first one's 15 s passed too.
	bad.AnswerAll(http.StatusBadRequest)
	api.Generate(testSerial, time.Now())
	do("wide again", chromedp.EmulateViewport(1280, 900))
	until("/ui/dead", "#dead", "archive", "HTTP 400")
	mark := func(ctx context.Context, js string) bool {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		require.NoError(t, err, js)
		return v
	}
	mark(browser, `localStorage.setItem("leadbridge-refresh", "1"); true`)
	defer mark(browser, `localStorage.setItem("leadbridge-refresh", "0"); true`)
	do("tick a dead letter", chromedp.Navigate(base+"/ui/dead"), chromedp.WaitVisible(chromedp.CSS(`input[name="sel"]`)),
		chromedp.Click(chromedp.CSS(`input[name="sel"]`)))
	require.True(t, mark(browser, `document.activeElement.blur(); window.lbMark = 1; document.getElementById("autorefresh").checked`))
	idle, cancelIdle := chromedp.NewContext(browser)
	defer cancelIdle()
	require.NoError(t, chromedp.Do(idle, chromedp.Navigate(base+"/ui/dead"), chromedp.WaitVisible(chromedp.ID("dead"))))
	require.True(t, mark(idle, `window.lbMark = 1; true`))
	require.Eventually(t, func() bool {
		v, err := chromedp.Run(idle, chromedp.Evaluate[bool](`window.lbMark === undefined`))
		return err == nil && v
	}, 45*time.Second, 250*time.Millisecond, "the idle tab reloads by itself")
	assert.True(t, mark(browser, `window.lbMark === 1 && document.querySelector('input[name="sel"]:checked') !== null`),
		"the tab with a ticked dead letter did not reload under the operator's hands")
}
