package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binaries are the two programs a benchmark runs, built once per test binary into binDir.
var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
	bridgeBin string
	plainBin  string
	floorBin  string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lbbench-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinaries builds leadbridge, bench/plain and bench/floor (without -race) once,
// from the module root above this package, and returns the first two (floorBin is the
// third).
func buildBinaries(t testing.TB) (bridge, plain string) {
	t.Helper()
	buildOnce.Do(func() {
		bridgeBin = filepath.Join(binDir, "leadbridge")
		plainBin = filepath.Join(binDir, "plain")
		floorBin = filepath.Join(binDir, "floor")
		for pkg, out := range map[string]string{"./cmd/leadbridge": bridgeBin, "./bench/plain": plainBin, "./bench/floor": floorBin} {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = ".."
			if msg, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
				return
			}
		}
	})
	require.NoError(t, buildErr)
	return bridgeBin, plainBin
}

// usage is what one finished process cost.
type usage struct {
	wall    time.Duration
	cpu     time.Duration // user + system
	peakRSS int64         // bytes: the process's VmHWM, sampled every hwmEvery while it ran
}

// hwmEvery is how often runToEnd reads a running program's VmHWM. The kernel's own
// figure at exit, rusage's ru_maxrss, is no use here: exec carries the high-water mark
// of the image it replaces into it, and os/exec starts a child in the parent's address
// space (vfork), so a child's ru_maxrss is never below the peak RSS of the benchmark
// process itself, which holds nats-server and every message the runs published
// (golang/go#32054). VmHWM belongs to the new image alone; growth in the last interval
// before exit can be missed.
const hwmEvery = 20 * time.Millisecond

// runToEnd runs a program until it exits, its output going to logPath, and reports what
// it cost. A non-zero exit is an error carrying the end of the log.
func runToEnd(bin string, args, env []string, logPath string) (usage, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return usage{}, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return usage{}, fmt.Errorf("%s: %v", filepath.Base(bin), err)
	}
	exited := make(chan struct{})
	hwm := make(chan int64, 1)
	go func() {
		var peak int64
		tick := time.NewTicker(hwmEvery)
		defer tick.Stop()
		for {
			if _, h, err := procMemory(cmd.Process.Pid); err == nil {
				peak = max(peak, h)
			}
			select {
			case <-exited:
				hwm <- peak
				return
			case <-tick.C:
			}
		}
	}()
	runErr := cmd.Wait()
	wall := time.Since(start)
	close(exited)
	peak := <-hwm
	if runErr != nil {
		return usage{}, fmt.Errorf("%s: %v; log ends:\n%s", filepath.Base(bin), runErr, tail(logPath, 20))
	}
	if peak == 0 {
		return usage{}, fmt.Errorf("%s: its VmHWM was never read; it ran %s", filepath.Base(bin), wall)
	}
	return usage{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), peakRSS: peak}, nil
}

// tail is the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// clockTick is USER_HZ, the unit of CPU times in /proc/<pid>/stat (100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU is the CPU time (user + system, all threads) a running process has used.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it start with state (field 3).
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no command name")
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name", len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(fields[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc stat: %w", err)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// procMemory is a running process's resident set and its high-water mark, in bytes.
func procMemory(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc status %s: %w", name, err)
		}
		if name == "VmRSS" {
			rss = kb * 1024
		} else {
			hwm = kb * 1024
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, errors.New("/proc status: no VmRSS or VmHWM")
	}
	return rss, hwm, nil
}

// procSwitches is how many times the threads of a running process have been switched
// off their CPU, voluntarily (to wait) or not, summed over its threads: the wake-ups an
// idle daemon pays for. Threads that ended are not counted, so it is read over a window
// in which the runtime keeps its threads (an idle Go process does).
func procSwitches(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil {
		return 0, err
	}
	var n int64
	for _, path := range tasks {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // the thread ended meanwhile
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			name, value, ok := strings.Cut(line, ":")
			if !ok || (name != "voluntary_ctxt_switches" && name != "nonvoluntary_ctxt_switches") {
				continue
			}
			v, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %s: %w", path, name, err)
			}
			n += v
		}
	}
	if len(tasks) == 0 {
		return 0, fmt.Errorf("/proc/%d/task: no threads", pid)
	}
	return n, nil
}

// mb is bytes in MiB for the tables.
func mb(b int64) float64 { return float64(b) / (1 << 20) }
