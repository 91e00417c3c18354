package vm

// VM snapshots: a tag present in every qcow2 disk of a VM, as QEMU's
// savevm makes them. A running (or paused) VM's snapshots are made, loaded
// and deleted by its QEMU (QMP snapshot-save, snapshot-load and
// snapshot-delete, which hold the guest's RAM and device state in the first
// disk); a stopped VM's by vmtui's own qcow2 engine (package disk), on the
// disks only. A stopped VM reverted to a snapshot that holds RAM starts from
// it (QEMU's -loadvm). Every change holds the VM's lock, as Start and Remove
// do, so that a snapshot and a start, stop or remove of one VM never
// interleave.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/vm/qmp"
)

// Snapshot is one snapshot of a VM: a tag present in all its qcow2 disks.
type Snapshot struct {
	ID          string // the first disk's snapshot ID
	Tag         string
	VMStateSize int64 // bytes of RAM and device state; 0 for a disk-only snapshot
	Date        time.Time
	VMClock     time.Duration
}

// Errors the snapshot operations wrap.
var (
	// ErrSnapshotExists: CreateSnapshot was given a tag the VM has already.
	ErrSnapshotExists = errors.New("snapshot exists already")
	// ErrSnapshotNotFound: no snapshot of the VM has the tag given.
	ErrSnapshotNotFound = errors.New("no such snapshot")
)

// MaxSnapshotTagLen is the longest tag, in bytes: QEMU keeps 255.
const MaxSnapshotTagLen = 255

// snapshotJobTimeout bounds one snapshot job of a running VM's QEMU: saving
// or loading the RAM of a large guest to a slow disk.
const snapshotJobTimeout = 30 * time.Minute

// ValidSnapshotTag checks a snapshot tag: 1 to MaxSnapshotTagLen bytes of
// UTF-8, no control characters, not only digits (QEMU and qemu-img would
// take it for a snapshot ID).
func ValidSnapshotTag(tag string) error {
	switch {
	case tag == "":
		return errors.New("empty snapshot tag")
	case len(tag) > MaxSnapshotTagLen:
		return fmt.Errorf("snapshot tag %.20q...: longer than %d bytes", tag, MaxSnapshotTagLen)
	case !utf8.ValidString(tag):
		return fmt.Errorf("snapshot tag %q: not UTF-8", tag)
	case strings.ContainsFunc(tag, unicode.IsControl):
		return fmt.Errorf("snapshot tag %q: contains a control character", tag)
	case strings.TrimFunc(tag, unicode.IsSpace) != tag:
		return fmt.Errorf("snapshot tag %q: begins or ends with a space", tag)
	case strings.Trim(tag, "0123456789") == "":
		return fmt.Errorf("snapshot tag %q: only digits, which would be read as a snapshot ID", tag)
	}
	return nil
}

// snapDisk is one disk of a VM taking part in its snapshots.
type snapDisk struct {
	path string
	node string // QEMU's block node name (cmdline.go's diskDev)
}

// snapshotDisks returns the VM's disks, refusing a VM without a disk and
// one with a disk that cannot hold snapshots (raw, qcow version 1), naming
// the disk and how to convert it.
func snapshotDisks(def *config.VM) ([]snapDisk, error) {
	if def.Err != nil {
		return nil, def.Err
	}
	if len(def.Disks) == 0 {
		return nil, fmt.Errorf("vm %s has no disk to hold a snapshot", def.Name)
	}
	var out []snapDisk
	for i, d := range def.Disks {
		if err := disk.CheckFile(d.Path); err != nil {
			return nil, fmt.Errorf("vm %s: disk %w", def.Name, err)
		}
		f := disk.Format(d.Format)
		if f == "" {
			var err error
			if f, err = disk.DetectFormat(d.Path); err != nil {
				return nil, fmt.Errorf("vm %s: disk %q: %w", def.Name, d.Path, err)
			}
		}
		if f != disk.FormatQcow2 {
			what := "a " + string(f) + " image"
			if f == disk.FormatQcow {
				what = "a qcow (version 1) image"
			}
			return nil, fmt.Errorf("vm %s: disk %q is %s, which cannot hold snapshots; convert it to qcow2 "+
				"(vmtui disk convert -O qcow2 %s %s) and use the new image in the vm's definition",
				def.Name, d.Path, what, shellQuote(d.Path), shellQuote(convertedName(d.Path)))
		}
		out = append(out, snapDisk{path: d.Path, node: fmt.Sprintf("disk%d", i)})
	}
	return out, nil
}

// convertedName suggests the name of the qcow2 image converted from path.
func convertedName(path string) string {
	n := strings.TrimSuffix(path, filepath.Ext(path)) + ".qcow2"
	if n == path {
		n = strings.TrimSuffix(path, ".qcow2") + "-converted.qcow2"
	}
	return n
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r < utf8.RuneSelf && (r == '/' || r == '.' || r == '_' || r == '-' || r == '+' || r == ',' ||
			r == ':' || r == '@' || r == '%' || r == '=' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// diskSnapshots reads the snapshot table of every disk. The images may be
// in use by the VM's QEMU: they are read sharing them (qemu-img -U).
func diskSnapshots(ctx context.Context, disks []snapDisk) ([][]disk.Snapshot, error) {
	out := make([][]disk.Snapshot, len(disks))
	for i, d := range disks {
		sns, err := disk.Snapshots(ctx, d.path, disk.OpenOptions{ForceShare: true})
		if err != nil {
			return nil, err
		}
		out[i] = sns
	}
	return out, nil
}

// findTag returns the snapshot named tag in sns.
func findTag(sns []disk.Snapshot, tag string) (disk.Snapshot, bool) {
	for _, sn := range sns {
		if sn.Name == tag {
			return sn, true
		}
	}
	return disk.Snapshot{}, false
}

// vmSnapshots returns the tags that every disk has, in the first disk's order.
func vmSnapshots(per [][]disk.Snapshot) []Snapshot {
	var out []Snapshot
	if len(per) == 0 {
		return out
	}
	seen := map[string]bool{}
next:
	for _, sn := range per[0] {
		if seen[sn.Name] {
			continue // a duplicate name (qemu-img makes them): the first counts
		}
		seen[sn.Name] = true
		for _, other := range per[1:] {
			if _, ok := findTag(other, sn.Name); !ok {
				continue next
			}
		}
		out = append(out, Snapshot{
			ID: sn.ID, Tag: sn.Name, VMStateSize: int64(min(sn.VMStateSize, 1<<62)),
			Date: sn.Date, VMClock: sn.VMClock,
		})
	}
	return out
}

// Snapshots lists the snapshots of the VM def: the tags all its disks
// have, with the first disk's ID, date, VM clock and VM state size. It
// takes no lock and reads the disks sharing them, as a status query does.
func (m *Manager) Snapshots(ctx context.Context, def *config.VM) ([]Snapshot, error) {
	disks, err := snapshotDisks(def)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	per, err := diskSnapshots(ctx, disks)
	if err != nil {
		return nil, fmt.Errorf("list snapshots of vm %s: %w", def.Name, err)
	}
	return vmSnapshots(per), nil
}

// snapshotLocked is what a snapshot operation works on, under the VM's lock.
type snapshotLocked struct {
	def   *config.VM // the definition, read again under the lock
	disks []snapDisk
	per   [][]disk.Snapshot
	st    Status
}

// lockForSnapshot takes the VM's lock (as Remove does: a start in progress
// is waited for), reads the definition again and the disks' snapshots, and
// finds whether a QEMU runs. what prefixes errors.
func (m *Manager) lockForSnapshot(ctx context.Context, def *config.VM, what string) (*store.FileLock, *snapshotLocked, error) {
	if err := config.ValidName(def.Name); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if _, err := m.paths.EnsureRuntimeDir(def.Name); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	lctx, cancel := context.WithTimeout(ctx, startTimeout+forceGrace)
	lock, err := store.Lock(lctx, m.paths.LockFile(def.Name))
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	s, err := m.snapshotState(ctx, def)
	if err != nil {
		lock.Unlock()
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	// Marks the lock's holder for a stop waiting for it (lockwait.go).
	os.WriteFile(m.paths.RuntimeFile(def.Name, snapshottingFileName), nil, 0o600)
	return lock, s, nil
}

// unlockSnapshot releases the lock lockForSnapshot took.
func (m *Manager) unlockSnapshot(name string, lock *store.FileLock) {
	os.Remove(m.paths.RuntimeFile(name, snapshottingFileName))
	lock.Unlock()
}

func (m *Manager) snapshotState(ctx context.Context, def *config.VM) (*snapshotLocked, error) {
	cur, err := m.reread(def)
	if err != nil {
		return nil, err
	}
	s := &snapshotLocked{def: cur}
	if s.disks, err = snapshotDisks(cur); err != nil {
		return nil, err
	}
	s.st = m.inspectLocked(ctx, cur, &scan{})
	if s.st.State == StateBroken || s.st.State == StateStopping {
		// A QEMU on its way out (a stop that did not wait for the lock):
		// once it has exited, the VM is stopped.
		wctx, cancel := context.WithTimeout(ctx, forceGrace)
		if m.waitExit(wctx, cur.Name, s.st.PID) == nil {
			s.st = m.inspectLocked(ctx, cur, &scan{})
		}
		cancel()
	}
	if s.st.Running() && s.st.State != StateRunning && s.st.State != StatePaused {
		msg := fmt.Sprintf("vm %s is %s", cur.Name, s.st.State)
		if s.st.Err != "" {
			msg += ": " + s.st.Err
		}
		return nil, errors.New(msg)
	}
	if s.per, err = diskSnapshots(ctx, s.disks); err != nil {
		return nil, fmt.Errorf("vm %s: %w", cur.Name, err)
	}
	return s, nil
}

// CreateSnapshot takes a snapshot named tag of the VM def. A running or
// paused VM's holds its RAM and devices and all its disks at one instant:
// QEMU pauses the guest while it saves, and a running guest runs on after.
// A stopped VM's holds its disks, each taken by vmtui's engine: all of them
// or, when one fails, none. A tag the VM has (on any disk) is refused with
// an error wrapping ErrSnapshotExists.
func (m *Manager) CreateSnapshot(ctx context.Context, def *config.VM, tag string) error {
	what := fmt.Sprintf("create snapshot %q of vm %s", tag, def.Name)
	if err := ValidSnapshotTag(tag); err != nil {
		return fmt.Errorf("create snapshot of vm %s: %w", def.Name, err)
	}
	lock, s, err := m.lockForSnapshot(ctx, def, what)
	if err != nil {
		return err
	}
	defer m.unlockSnapshot(def.Name, lock)
	for i, sns := range s.per {
		for _, sn := range sns {
			if sn.Name == tag || sn.ID == tag {
				return fmt.Errorf("%s: %w (on disk %q)", what, ErrSnapshotExists, s.disks[i].path)
			}
		}
	}
	if s.st.Running() {
		if err := checkSavable(s.def); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := m.snapshotJob(ctx, s, "snapshot-save", tag, true); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	var done []disk.Snapshot
	for i, d := range s.disks {
		sn, err := disk.CreateSnapshot(ctx, d.path, tag)
		if err == nil {
			done = append(done, sn)
			continue
		}
		// Undo: the snapshots made are deleted, even once ctx is canceled.
		uctx := context.WithoutCancel(ctx)
		var undo []error
		for j, sn := range done {
			if uerr := disk.DeleteSnapshot(uctx, s.disks[j].path, sn.ID); uerr != nil {
				undo = append(undo, uerr)
			}
		}
		if len(undo) > 0 {
			return fmt.Errorf("%s: disk %d: %w (and undoing the disks before it: %w)", what, i, err, errors.Join(undo...))
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// RevertSnapshot puts the VM def back to its snapshot tag. A running or
// paused VM is put back at that instant by its QEMU, RAM and disks (a
// snapshot without RAM is refused: stop the VM first); a running guest runs
// on from there, a paused one stays paused. A stopped VM reverted to a
// snapshot with RAM is started from it; to a disk-only snapshot, its disks
// are reverted by vmtui's engine. A tag that not every disk has is refused
// with an error wrapping ErrSnapshotNotFound.
func (m *Manager) RevertSnapshot(ctx context.Context, def *config.VM, tag string) error {
	what := fmt.Sprintf("revert vm %s to snapshot %q", def.Name, tag)
	if err := ValidSnapshotTag(tag); err != nil {
		return fmt.Errorf("revert vm %s: %w", def.Name, err)
	}
	lock, s, err := m.lockForSnapshot(ctx, def, what)
	if err != nil {
		return err
	}
	defer m.unlockSnapshot(def.Name, lock)
	ids := make([]string, len(s.disks))
	var first disk.Snapshot
	for i, sns := range s.per {
		sn, ok := findTag(sns, tag)
		if !ok {
			if i == 0 {
				return fmt.Errorf("%s: %w", what, ErrSnapshotNotFound)
			}
			return fmt.Errorf("%s: %w on disk %q (the snapshot is on disk %q only)", what, ErrSnapshotNotFound, s.disks[i].path, s.disks[0].path)
		}
		if i == 0 {
			first = sn
		}
		ids[i] = sn.ID
	}
	// A template's disks are its instances' base images: a revert would
	// change what every instance reads. (A snapshot taken or deleted
	// changes only metadata, which they do not read.)
	if err := m.templateInUse(s.def.Name, whyNoStart); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case s.st.Running() && first.VMStateSize == 0:
		return fmt.Errorf("%s: the snapshot holds no RAM (a disk-only snapshot): stop the vm first, then revert", what)
	case s.st.Running():
		if err := m.snapshotJob(ctx, s, "snapshot-load", tag, true); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case first.VMStateSize > 0:
		// QEMU loads RAM, devices and disks as it starts.
		if _, err := m.paths.EnsureLogDir(s.def.Name); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if _, err := m.startLocked(ctx, s.def, StartOptions{LoadVM: tag}); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	// A saved VM's state (Save) expects the disks as they are.
	if m.HasSavedState(s.def.Name) {
		return fmt.Errorf("%s: the vm has a saved state (vmtui save), which expects its disks as they are: "+
			"resume it (start) and stop it, or discard the state (start --fresh), first", what)
	}
	for i, d := range s.disks {
		if err := disk.ApplySnapshot(ctx, d.path, ids[i]); err != nil {
			if i > 0 {
				return fmt.Errorf("%s: %w (disks before it were reverted)", what, err)
			}
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// DeleteSnapshot deletes the snapshot tag of the VM def, from every disk
// that has it: by the VM's QEMU when it runs, else by vmtui's engine. A
// tag no disk has is refused with an error wrapping ErrSnapshotNotFound.
func (m *Manager) DeleteSnapshot(ctx context.Context, def *config.VM, tag string) error {
	what := fmt.Sprintf("delete snapshot %q of vm %s", tag, def.Name)
	if err := ValidSnapshotTag(tag); err != nil {
		return fmt.Errorf("delete snapshot of vm %s: %w", def.Name, err)
	}
	lock, s, err := m.lockForSnapshot(ctx, def, what)
	if err != nil {
		return err
	}
	defer m.unlockSnapshot(def.Name, lock)
	ids := make([]string, len(s.disks))
	found := false
	for i, sns := range s.per {
		if sn, ok := findTag(sns, tag); ok {
			ids[i], found = sn.ID, true
		}
	}
	if !found {
		return fmt.Errorf("%s: %w", what, ErrSnapshotNotFound)
	}
	if s.st.Running() {
		if err := m.snapshotJob(ctx, s, "snapshot-delete", tag, false); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	var errs []error
	for i, d := range s.disks {
		if ids[i] == "" {
			continue
		}
		if err := disk.DeleteSnapshot(ctx, d.path, ids[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// snapshotJobPrefix starts the IDs of the jobs vmtui runs in QEMU.
const snapshotJobPrefix = "vmtui-snapshot-"

// jobInfo is an entry of query-jobs.
type jobInfo struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Status string `json:"status"`
	Error  string `json:"error"`
}

// snapshotJob runs command (snapshot-save, -load or -delete) for tag on the
// VM's QEMU, over every disk (with the RAM and device state in the first
// when vmstate is set), waits for the job to conclude and dismisses it. It
// returns the job's error. QEMU pauses the guest as long as it needs and
// resumes a guest that was running (a failed load leaves it paused: its
// state may be partly loaded).
func (m *Manager) snapshotJob(ctx context.Context, s *snapshotLocked, command, tag string, vmstate bool) error {
	ctx, cancel := context.WithTimeout(ctx, snapshotJobTimeout)
	defer cancel()
	err := m.runSnapshotJob(ctx, s, command, tag, vmstate)
	lost := errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, qmp.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, qmp.ErrBusy)
	if !lost || ctx.Err() != nil {
		return err
	}
	// A forced stop does not wait for the VM's lock once it has seen the
	// VM run: its QEMU may quit (or be killed) under the job. Once it has
	// exited, what it left on the disks decides: a snapshot on every disk
	// was made, one on some disks only is deleted.
	if p, _ := m.find(s.def.Name, nil); p != nil {
		wctx, cancel := context.WithTimeout(ctx, forceGrace)
		gone := m.waitExit(wctx, s.def.Name, p.PID) == nil
		cancel()
		if !gone {
			return err
		}
	}
	err = fmt.Errorf("the vm stopped meanwhile: %w", err)
	per, lerr := diskSnapshots(ctx, s.disks)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	var have []int
	for i, sns := range per {
		if _, ok := findTag(sns, tag); ok {
			have = append(have, i)
		}
	}
	switch {
	case command == "snapshot-save" && len(have) == len(s.disks):
		return nil
	case command == "snapshot-delete" && len(have) == 0:
		return nil
	case command == "snapshot-save":
		uctx := context.WithoutCancel(ctx)
		for _, i := range have {
			sn, _ := findTag(per[i], tag)
			if derr := disk.DeleteSnapshot(uctx, s.disks[i].path, sn.ID); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}
	return err
}

func (m *Manager) runSnapshotJob(ctx context.Context, s *snapshotLocked, command, tag string, vmstate bool) error {
	return m.withQMP(ctx, s.def.Name, func(c *qmp.Client) error {
		dismissStaleJobs(ctx, c)
		sub := c.Subscribe(64, "JOB_STATUS_CHANGE")
		defer sub.Close()
		id := fmt.Sprintf("%s%d-%d", snapshotJobPrefix, os.Getpid(), time.Now().UnixNano())
		args := map[string]any{"job-id": id, "tag": tag}
		var nodes []string
		for _, d := range s.disks {
			nodes = append(nodes, d.node)
		}
		args["devices"] = nodes
		if vmstate {
			args["vmstate"] = nodes[0]
		}
		if err := c.Execute(ctx, command, args, nil); err != nil {
			return err
		}
		job, err := waitJob(ctx, c, sub, id)
		if err != nil {
			return err
		}
		if err := c.Execute(ctx, "job-dismiss", map[string]string{"id": id}, nil); err != nil {
			return err
		}
		if job.Error == "" {
			return nil
		}
		jerr := errors.New(job.Error)
		if command == "snapshot-load" && s.st.State == StateRunning {
			if qs, err := c.QueryStatus(ctx); err == nil && !qs.Running {
				return fmt.Errorf("%w (the vm is left paused: its state may be partly loaded; revert again, or unpause it)", jerr)
			}
		}
		return jerr
	})
}

// waitJob waits until job id has concluded, by its events, or, should one
// be missed, by query-jobs once a second, and returns its query-jobs entry.
func waitJob(ctx context.Context, c *qmp.Client, sub *qmp.Subscription, id string) (jobInfo, error) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	check := true // the job may have concluded before its reply
	for {
		if check {
			var jobs []jobInfo
			if err := c.Execute(ctx, "query-jobs", nil, &jobs); err != nil {
				return jobInfo{}, err
			}
			found := false
			for _, j := range jobs {
				if j.ID != id {
					continue
				}
				found = true
				if j.Status == "concluded" {
					return j, nil
				}
			}
			if !found {
				return jobInfo{}, fmt.Errorf("qemu job %s vanished before it concluded", id)
			}
			check = false
		}
		select {
		case ev, ok := <-sub.C:
			if !ok {
				if err := c.Err(); err != nil {
					return jobInfo{}, fmt.Errorf("qemu job %s: %w", id, err)
				}
				return jobInfo{}, fmt.Errorf("qemu job %s: monitor connection lost", id)
			}
			var d struct{ ID, Status string }
			if ev.DecodeData(&d) == nil && d.ID == id && d.Status == "concluded" {
				check = true
			}
		case <-tick.C:
			check = true
		case <-ctx.Done():
			return jobInfo{}, fmt.Errorf("wait for qemu job %s: %w (it goes on in qemu)", id, ctx.Err())
		}
	}
}

// dismissStaleJobs dismisses the concluded snapshot jobs of a vmtui that
// did not live to dismiss them. Best effort.
func dismissStaleJobs(ctx context.Context, c *qmp.Client) {
	var jobs []jobInfo
	if c.Execute(ctx, "query-jobs", nil, &jobs) != nil {
		return
	}
	for _, j := range jobs {
		if strings.HasPrefix(j.ID, snapshotJobPrefix) && j.Status == "concluded" {
			c.Execute(ctx, "job-dismiss", map[string]string{"id": j.ID}, nil)
		}
	}
}
