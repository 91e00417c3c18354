package vm

import (
	"bytes"
	"errors"
	"fmt"
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

// readProc reads /proc/PID.
func readProc(pid int) (*procInfo, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errNoProcess
		}
		return nil, err
	}
	p := &procInfo{PID: pid}
	// The command name is in parentheses and may contain anything: parse from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse %s/stat", dir)
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19]; field 24 (rss pages) fields[21].
	if len(fields) < 22 {
		return nil, fmt.Errorf("parse %s/stat: %d fields", dir, len(fields))
	}
	p.State = fields[0][0]
	if p.State == 'Z' || p.State == 'X' {
		return nil, errNoProcess
	}
	if p.StartTime, err = strconv.ParseUint(fields[19], 10, 64); err != nil {
		return nil, fmt.Errorf("parse %s/stat start time: %w", dir, err)
	}
	pages, _ := strconv.ParseInt(fields[21], 10, 64)
	p.RSS = pages * int64(os.Getpagesize())
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
