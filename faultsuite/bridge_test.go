package faultsuite

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// moduleRoot is the directory of leadbridge's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod)
		}
	}
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "go.mod not found above the test's directory")
		dir = parent
	}
}

// built is the leadbridge binary the package's tests share, built once.
var built struct {
	once sync.Once
	dir  string // removed by TestMain
	bin  string
	out  []byte
	err  error
}

// TestMain removes the shared binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildBridge builds the leadbridge binary (without -race, for speed) into a temporary
// directory, once for all the package's tests, and returns its path.
func buildBridge(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.err = errors.New("the build was abandoned")
		root := moduleRoot(t)
		dir, err := os.MkdirTemp("", "leadbridge-faultsuite-")
		if err != nil {
			built.err = err
			return
		}
		built.dir, built.bin = dir, filepath.Join(dir, "leadbridge")
		cmd := exec.Command("go", "build", "-o", built.bin, "./cmd/leadbridge")
		cmd.Dir = root
		built.out, built.err = cmd.CombinedOutput()
	})
	require.NoError(t, built.err, "go build ./cmd/leadbridge:\n%s", built.out)
	return built.bin
}

// proc is one run of the bridge process.
type proc struct {
	cmd     *exec.Cmd
	log     string
	exited  chan struct{} // closed once the process is gone; err is set before
	err     error
	signals int // signals the suite sent; an exit without one is unexpected
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// exitCode is the process's exit code, or -1 when a signal ended it.
func (p *proc) exitCode() int {
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// bridge runs `leadbridge run` as a child process, one log file per run. Its methods are
// called from the test goroutine only.
type bridge struct {
	t      *testing.T
	bin    string
	config string
	logDir string
	env    []string

	runs       []*proc
	kills      int
	terms      []termResult
	unexpected []string // exits nobody asked for
}

// termResult is how one SIGTERM went.
type termResult struct {
	code int
	took time.Duration
	hung bool
	log  string
}

func newBridge(t *testing.T, bin, config, logDir string, env []string) *bridge {
	b := &bridge{t: t, bin: bin, config: config, logDir: logDir, env: env}
	t.Cleanup(b.cleanup)
	return b
}

func (b *bridge) current() *proc {
	if len(b.runs) == 0 {
		return nil
	}
	return b.runs[len(b.runs)-1]
}

// start starts a new run; the previous one must be gone.
func (b *bridge) start() {
	b.t.Helper()
	if p := b.current(); p != nil {
		require.False(b.t, p.alive(), "start while the bridge is still running")
	}
	path := filepath.Join(b.logDir, fmt.Sprintf("run-%02d.log", len(b.runs)+1))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	require.NoError(b.t, err)
	defer f.Close()
	cmd := exec.Command(b.bin, "run", "--config", b.config)
	cmd.Env = b.env
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(b.t, cmd.Start())
	p := &proc{cmd: cmd, log: path, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	b.runs = append(b.runs, p)
}

// check records an exit of the current run that no signal caused.
func (b *bridge) check() {
	p := b.current()
	if p == nil || p.alive() || p.signals > 0 {
		return
	}
	p.signals++ // report it once
	b.unexpected = append(b.unexpected, fmt.Sprintf("%s: exited by itself: %v", filepath.Base(p.log), p.err))
}

// crashed reports whether the current run exited without being asked to.
func (b *bridge) crashed() bool {
	b.check()
	return len(b.unexpected) > 0
}

// kill sends SIGKILL to the current run and waits until it is gone.
func (b *bridge) kill() {
	b.t.Helper()
	b.check()
	p := b.current()
	if p == nil || !p.alive() {
		return
	}
	p.signals++
	require.NoError(b.t, p.cmd.Process.Kill())
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		require.Fail(b.t, "the bridge survived SIGKILL for 10s")
	}
	b.kills++
}

// term sends SIGTERM to the current run and waits up to deadline for it to exit; a run
// still there then is hung, killed, and reported as such.
func (b *bridge) term(deadline time.Duration) termResult {
	b.t.Helper()
	b.check()
	p := b.current()
	require.NotNil(b.t, p)
	require.True(b.t, p.alive(), "SIGTERM to a bridge that is not running")
	p.signals++
	start := time.Now()
	require.NoError(b.t, p.cmd.Process.Signal(syscall.SIGTERM))
	res := termResult{log: filepath.Base(p.log)}
	select {
	case <-p.exited:
		res.took = time.Since(start)
		res.code = p.exitCode()
	case <-time.After(deadline):
		res.hung = true
		res.took = time.Since(start)
		_ = p.cmd.Process.Kill()
		<-p.exited
		res.code = p.exitCode()
	}
	b.terms = append(b.terms, res)
	return res
}

// cleanup leaves no bridge running, whatever path the test took.
func (b *bridge) cleanup() {
	p := b.current()
	if p == nil || !p.alive() {
		return
	}
	p.signals++
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		b.t.Errorf("bridge pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

// logs lists the log file of every run, in order.
func (b *bridge) logs() []string {
	out := make([]string, len(b.runs))
	for i, p := range b.runs {
		out[i] = p.log
	}
	return out
}
