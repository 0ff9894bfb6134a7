package integration

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTicks reads the machine's CPU time from /proc/stat (Linux; zeros
// elsewhere): busy and total ticks summed over every core. Benchmarks use
// it to report how much of the machine a contender used — on a 2-core VM
// shared by the database, the broker and the Go process, a contender that
// keeps both cores busy can only go faster by doing less per event.
func cpuTicks() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0
		}
		if i >= 8 { // guest time is counted in user already
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// selfCPU is the CPU time of this process (the Go side: the relay, and
// the in-process kfake broker when no real one is given).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter adds up the busy and total ticks of the spans it measures, and
// this process's CPU time in them.
type cpuMeter struct {
	busy, total uint64
	self        time.Duration
}

// measure runs f and adds the machine's CPU ticks and this process's CPU
// time during it.
func (m *cpuMeter) measure(f func()) {
	b0, t0 := cpuTicks()
	s0 := selfCPU()
	f()
	b1, t1 := cpuTicks()
	m.self += selfCPU() - s0
	m.busy += b1 - b0
	m.total += t1 - t0
}

// selfMsPer1k is this process's CPU time, in milliseconds, per 1,000 of n
// events.
func (m *cpuMeter) selfMsPer1k(n float64) float64 {
	if n == 0 {
		return 0
	}
	return m.self.Seconds() * 1000 / (n / 1000)
}

// share is the fraction of the machine's CPU time that was busy.
func (m *cpuMeter) share() float64 {
	if m.total == 0 {
		return 0
	}
	return float64(m.busy) / float64(m.total)
}

// msPer1k is the busy CPU time, in milliseconds (at 100 ticks a second),
// per 1,000 of n events.
func (m *cpuMeter) msPer1k(n float64) float64 {
	if n == 0 {
		return 0
	}
	return float64(m.busy) * 10 / (n / 1000)
}
