package vm

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"
)

// What /proc tells about a QEMU process. A PID alone proves nothing: after
// QEMU exits its PID may be reused, so a recorded PID is trusted only when
// the process's start time and command line still match, and the record
// was written since the host last booted.

// procInfo is a process as /proc describes it.
type procInfo struct {
	PID       int
	StartTime uint64 // clock ticks after boot (field 22 of /proc/PID/stat)
	State     byte   // R, S, Z, ...
	Cmdline   []string
	RSS       int64 // resident bytes
	// UID and GID are the effective user and group, RealUID the real
	// user (from /proc/PID/status).
	UID, GID, RealUID uint32
}

// errNoProcess means the process does not exist (or is a zombie).
var errNoProcess = errors.New("no such process")

// ClockTicks is the unit of the times in /proc/PID/stat (USER_HZ): ticks a
// second.
const ClockTicks = userHZ

// ProcStat is what /proc/PID/stat says of a process: enough to follow a
// QEMU's CPU time and memory without asking QEMU anything.
type ProcStat struct {
	PID   int
	State byte // R, S, D, T (stopped by a signal), t (traced), Z, ...
	// StartTime is when the process started, in clock ticks after boot:
	// with the PID, it names one process (PIDs are reused).
	StartTime uint64
	// CPUTicks is the CPU time used, user and system (utime+stime), in
	// clock ticks (ClockTicks a second).
	CPUTicks uint64
	// RSS is the resident memory, bytes.
	RSS int64
}

// Stopped reports whether the process is stopped by a signal or a
// debugger (state T or t): then its QEMU cannot answer.
func (p ProcStat) Stopped() bool { return p.State == 'T' || p.State == 't' }

// ReadProcStat reads /proc/PID/stat. It returns an error wrapping
// fs.ErrNotExist when no process has that PID.
func ReadProcStat(pid int) (ProcStat, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ProcStat{}, fmt.Errorf("pid %d: %w: %w", pid, errNoProcess, fs.ErrNotExist)
		}
		return ProcStat{}, err
	}
	ps, err := ParseProcStat(data)
	if err != nil {
		return ProcStat{}, fmt.Errorf("parse %s: %w", path, err)
	}
	ps.PID = pid
	return ps, nil
}

// ParseProcStat parses the contents of a /proc/PID/stat file (PID is left
// 0: the caller knows it).
func ParseProcStat(data []byte) (ProcStat, error) {
	// The command name (field 2) is in parentheses and may contain
	// anything, spaces and parentheses included: the fields that follow
	// start after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return ProcStat{}, errors.New("no command name")
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); utime and stime (fields 14 and 15)
	// are fields[11] and [12], starttime (22) fields[19], rss in pages
	// (24) fields[21].
	if len(fields) < 22 {
		return ProcStat{}, fmt.Errorf("%d fields, want at least 24", len(fields)+2)
	}
	var ps ProcStat
	ps.State = fields[0][0]
	nums := make([]uint64, 0, 3)
	for _, f := range []int{11, 12, 19} {
		n, err := strconv.ParseUint(fields[f], 10, 64)
		if err != nil {
			return ProcStat{}, fmt.Errorf("field %d: %w", f+3, err)
		}
		nums = append(nums, n)
	}
	ps.CPUTicks, ps.StartTime = nums[0]+nums[1], nums[2]
	pages, err := strconv.ParseInt(fields[21], 10, 64)
	if err != nil {
		return ProcStat{}, fmt.Errorf("field 24: %w", err)
	}
	ps.RSS = max(pages, 0) * int64(os.Getpagesize())
	return ps, nil
}

// Sample reads /proc/PID/stat of the QEMU of a running VM, as listed. It
// returns ErrNotRunning when the VM was not running or its QEMU has exited
// since (the PID gone, a zombie, or reused by another process).
func (s Status) Sample() (ProcStat, error) {
	if s.PID == 0 {
		return ProcStat{}, ErrNotRunning
	}
	ps, err := ReadProcStat(s.PID)
	switch {
	case errors.Is(err, errNoProcess):
		return ProcStat{}, ErrNotRunning
	case err != nil:
		return ProcStat{}, err
	case ps.State == 'Z' || ps.State == 'X' || s.startTime != 0 && ps.StartTime != s.startTime:
		return ProcStat{}, ErrNotRunning
	}
	return ps, nil
}

// readProc reads /proc/PID.
func readProc(pid int) (*procInfo, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	ps, err := ReadProcStat(pid)
	if err != nil {
		return nil, err
	}
	if ps.State == 'Z' || ps.State == 'X' {
		return nil, errNoProcess
	}
	p := &procInfo{PID: pid, State: ps.State, StartTime: ps.StartTime, RSS: ps.RSS}
	cmd, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errNoProcess
		}
		return nil, err
	}
	cmd = bytes.TrimSuffix(cmd, []byte{0})
	if len(cmd) > 0 {
		p.Cmdline = strings.Split(string(cmd), "\x00")
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errNoProcess
		}
		return nil, err
	}
	uids, gids := statusIDs(status, "Uid:"), statusIDs(status, "Gid:")
	if len(uids) < 2 || len(gids) < 2 {
		return nil, fmt.Errorf("parse %s/status: no Uid or Gid line", dir)
	}
	p.RealUID, p.UID, p.GID = uids[0], uids[1], gids[1]
	return p, nil
}

// statusIDs returns the numbers of the line of /proc/PID/status starting
// with key ("Uid:": real, effective, saved and filesystem user IDs).
func statusIDs(status []byte, key string) []uint32 {
	for _, line := range strings.Split(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, key)
		if !ok {
			continue
		}
		var ids []uint32
		for _, f := range strings.Fields(rest) {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil
			}
			ids = append(ids, uint32(n))
		}
		return ids
	}
	return nil
}

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on Linux.
const userHZ = 100

// startedAt returns when the process started, from its start time in
// ticks since boot and the boot time in /proc/stat.
func (p *procInfo) startedAt() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			ticks := int64(p.StartTime)
			return time.Unix(btime+ticks/userHZ, (ticks%userHZ)*(1e9/userHZ)), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}

// bootID identifies the current boot of the host.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// listPIDs returns the PIDs of all processes.
func listPIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// ownerName renders a uid and gid as vmctl does: user:group, numbers when
// the names are unknown. It is truncated to 15 bytes as vmctl's buffer does.
func ownerName(uid, gid uint32) string {
	u := strconv.FormatUint(uint64(uid), 10)
	if x, err := user.LookupId(u); err == nil {
		u = x.Username
	}
	g := strconv.FormatUint(uint64(gid), 10)
	if x, err := user.LookupGroupId(g); err == nil {
		g = x.Name
	}
	s := u + ":" + g
	if len(s) > 15 {
		s = s[:15]
	}
	return s
}

// argValue returns the value following flag in argv, or "".
func argValue(argv []string, flag string) string {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			return argv[i+1]
		}
	}
	return ""
}
