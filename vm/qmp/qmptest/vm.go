package qmptest

import (
	"strconv"
	"sync"
	"time"
)

// VM is a small QEMU-like machine that [Server.EmulateVM] serves: a run
// state that stop, cont, system_powerdown, system_reset and quit change
// (with the events QEMU 7.2 sends, in its order), a serial pty in
// query-chardev, and vCPU threads in query-cpus-fast. Set its fields before
// passing it to EmulateVM.
type VM struct {
	// Status is the initial run state; "running" when empty.
	Status string
	// SerialLabel and PTY make chardev SerialLabel ("ser0" when empty)
	// a pty at PTY ("/dev/pts/9" when empty).
	SerialLabel, PTY string
	// ThreadIDs are the host thread ids of the vCPUs; one vCPU with
	// thread 4242 when empty.
	ThreadIDs []int
	// IgnorePowerdown makes the guest ignore the ACPI power button.
	// Otherwise system_powerdown is followed, after PowerdownDelay, by a
	// guest-initiated SHUTDOWN event and the end of the connection, as
	// when QEMU exits.
	IgnorePowerdown bool
	PowerdownDelay  time.Duration

	mu sync.Mutex
}

// State returns the machine's current run state.
func (vm *VM) State() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.Status
}

// SetStatus changes the run state behind the client's back, as a guest
// powering off under -no-shutdown, or a panic, would.
func (vm *VM) SetStatus(status string) {
	vm.mu.Lock()
	vm.Status = status
	vm.mu.Unlock()
}

// EmulateVM adds rules that make s behave as a QEMU running vm. Rules added
// earlier take precedence, so a test can still override single commands.
func (s *Server) EmulateVM(vm *VM) {
	vm.mu.Lock()
	if vm.Status == "" {
		vm.Status = "running"
	}
	if vm.SerialLabel == "" {
		vm.SerialLabel = "ser0"
	}
	if vm.PTY == "" {
		vm.PTY = "/dev/pts/9"
	}
	if len(vm.ThreadIDs) == 0 {
		vm.ThreadIDs = []int{4242}
	}
	vm.mu.Unlock()

	s.On("query-status").Respond(func(Command) Reply {
		st := vm.State()
		return Reply{Return: map[string]any{"status": st, "singlestep": false, "running": st == "running"}}
	})
	s.On("stop").Do(func(Command) { vm.SetStatus("paused") }).Event("STOP", nil).Return(nil)
	s.On("cont").Do(func(Command) { vm.SetStatus("running") }).Event("RESUME", nil).Return(nil)
	s.On("system_reset").Return(nil).
		Event("RESET", map[string]any{"guest": false, "reason": "host-qmp-system-reset"})
	pd := s.On("system_powerdown").Return(nil).Event("POWERDOWN", nil)
	if !vm.IgnorePowerdown {
		pd.Delay(vm.PowerdownDelay).
			Do(func(Command) { vm.SetStatus("shutdown") }).
			Event("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-shutdown"}).
			Disconnect()
	}
	s.On("quit").Do(func(Command) { vm.SetStatus("shutdown") }).
		Event("SHUTDOWN", map[string]any{"guest": false, "reason": "host-qmp-quit"}).
		Return(nil).Disconnect()
	s.On("query-chardev").Return([]map[string]any{
		{"frontend-open": true, "filename": "pty:" + vm.PTY, "label": vm.SerialLabel},
		{"frontend-open": true, "filename": "unix:/run/qmp.sock,server=on", "label": "compat_monitor0"},
	})
	cpus := make([]map[string]any, len(vm.ThreadIDs))
	for i, tid := range vm.ThreadIDs {
		cpus[i] = map[string]any{
			"cpu-index": i, "thread-id": tid, "target": "x86_64",
			"qom-path": "/machine/unattached/device[" + strconv.Itoa(i) + "]",
			"props":    map[string]int{"core-id": 0, "thread-id": 0, "socket-id": i},
		}
	}
	s.On("query-cpus-fast").Return(cpus)
}
