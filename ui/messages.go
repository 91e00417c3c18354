package ui

import (
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/vm"
)

// tickMsg asks for the next sample (or refresh) at at; gen tells stale
// ticks apart.
type tickMsg struct {
	gen int
	at  time.Time
}

// listMsg carries a full list of the VMs, read from at.
type listMsg struct {
	list []vm.Status
	err  error
	at   time.Time
}

// statusMsg carries the status of one VM, read from at; err is set when it
// could not be read (store.ErrNotFound once it is gone).
type statusMsg struct {
	name string
	st   vm.Status
	err  error
	at   time.Time
}

// sampleMsg carries /proc samples of the running VMs' QEMUs, by VM name,
// and the backend's stamp of the VMs' directories.
type sampleMsg struct {
	samples map[string]procSample
	stamp   string
	at      time.Time
}

// procSample is one QEMU's /proc sample, or why there is none
// (vm.ErrNotRunning once it exited).
type procSample struct {
	ps  vm.ProcStat
	err error
}

// watchMsg carries an event of a watched VM.
type watchMsg struct{ ev vm.WatchEvent }

// closeMsg closes the screen shown (a form), back to the table.
type closeMsg struct{}

// noticeMsg puts a message in the status line.
type noticeMsg struct {
	text  string
	isErr bool
}

// opDoneMsg reports the end of a lifecycle operation on a VM.
type opDoneMsg struct {
	op   *operation
	name string
	err  error
}

// consoleDoneMsg reports that the console session of a VM ended.
type consoleDoneMsg struct {
	name string
	err  error
}

// editedMsg reports that the editor on a definition file exited.
type editedMsg struct {
	name string
	err  error
}

// checkedMsg carries the result of re-reading an edited definition.
type checkedMsg struct {
	name string
	err  error
}

// detailMsg carries what the detail view shows of a VM beyond its status.
type detailMsg struct {
	name   string
	def    *config.VM
	defErr error
	disks  []diskDetail
	serial []string
}

// diskDetail is one disk of a VM with its image information.
type diskDetail struct {
	path string
	info *disk.ImageInfo
	err  error
}

// createdMsg reports the result of defining a new VM.
type createdMsg struct {
	def *config.VM
	err error
}

// diskDoneMsg reports the end of a disk creation or import.
type diskDoneMsg struct {
	path, verb string
	err        error
}

// progressMsg carries the progress of a disk import.
type progressMsg struct{ done, total int64 }
