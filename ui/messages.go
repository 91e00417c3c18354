package ui

import (
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/vm"
)

// tickMsg asks for the next refresh of the VM list; gen tells stale ticks apart.
type tickMsg struct{ gen int }

// listMsg carries a refreshed VM list and CPU samples of the running ones.
type listMsg struct {
	list    []vm.Status
	err     error
	samples map[string]cpuSample
}

// cpuSample is a QEMU process's CPU time (utime+stime, clock ticks) at a moment.
type cpuSample struct {
	pid   int
	ticks uint64
	at    time.Time
}

// opDoneMsg reports the end of a lifecycle operation on a VM.
type opDoneMsg struct {
	name, verb string
	err        error
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
