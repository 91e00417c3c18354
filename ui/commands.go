package ui

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/seriallog"
)

// The tea.Cmds that do the TUI's I/O. Each closes over copies of what it
// needs (the backend is an interface value, safe to share), never over the
// model.

// listTimeout bounds one refresh of the VM list.
const listTimeout = 10 * time.Second

// serialTailLines is how many lines of the serial log the detail view reads.
const serialTailLines = 8

// listCmd refreshes the VM list and samples the CPU time of running VMs.
func listCmd(b Backend, sample func(pid int) (uint64, bool)) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
		defer cancel()
		list, err := b.List(ctx)
		msg := listMsg{list: list, err: err}
		if sample != nil {
			now := time.Now()
			for _, st := range list {
				if st.PID == 0 {
					continue
				}
				if ticks, ok := sample(st.PID); ok {
					if msg.samples == nil {
						msg.samples = make(map[string]cpuSample)
					}
					msg.samples[st.Name] = cpuSample{pid: st.PID, ticks: ticks, at: now}
				}
			}
		}
		return msg
	}
}

// tickCmd waits d, then asks for refresh gen.
func tickCmd(d time.Duration, gen int) tea.Cmd {
	return tea.Tick(d, func(time.Time) tea.Msg { return tickMsg{gen: gen} })
}

// procCPUTicks reads utime+stime of process pid from /proc/PID/stat, in
// clock ticks.
func procCPUTicks(pid int) (uint64, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	fields := bytes.Fields(data[i+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseUint(string(fields[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return utime + stime, true
}

// opCmd runs a lifecycle operation on VM name.
func opCmd(b Backend, verb, name string) tea.Cmd {
	return func() tea.Msg {
		ctx := context.Background()
		var err error
		switch verb {
		case "start":
			err = b.Start(ctx, name)
		case "stop":
			err = b.Stop(ctx, name, false)
		case "force stop":
			err = b.Stop(ctx, name, true)
		case "pause":
			err = b.Pause(ctx, name)
		case "unpause":
			err = b.Unpause(ctx, name)
		case "remove":
			err = b.Remove(ctx, name)
		}
		return opDoneMsg{name: name, verb: verb, err: err}
	}
}

// detailCmd loads a VM's definition, disk chains and serial log tail.
func detailCmd(b Backend, name string) tea.Cmd {
	return func() tea.Msg {
		msg := detailMsg{name: name}
		msg.def, msg.defErr = b.Definition(name)
		if msg.def != nil {
			for _, d := range msg.def.Disks {
				info, err := b.DiskInfo(d.Path)
				msg.disks = append(msg.disks, diskDetail{path: d.Path, info: info, err: err})
			}
		}
		if lines, err := seriallog.TailText(b.SerialLog(name), serialTailLines); err == nil {
			msg.serial = lines
		}
		return msg
	}
}

// createCmd defines a new VM.
func createCmd(b Backend, def *config.VM) tea.Cmd {
	return func() tea.Msg {
		err := b.Create(def)
		return createdMsg{def: def, err: err}
	}
}

// checkCmd re-reads a definition after it was edited.
func checkCmd(b Backend, name string) tea.Cmd {
	return func() tea.Msg {
		_, err := b.Definition(name)
		return checkedMsg{name: name, err: err}
	}
}

// diskCreateCmd makes a new image.
func diskCreateCmd(b Backend, path string, opts disk.CreateOptions) tea.Cmd {
	return func() tea.Msg {
		verb := "created"
		if opts.BackingFile != "" {
			verb = "created overlay"
		}
		err := disk.NameHolder(b.CreateDisk(path, opts), definedDisks(b))
		return diskDoneMsg{path: path, verb: verb, err: err}
	}
}

// definedDisks returns a function that lists the disks of each VM b
// defines, by name, for disk.NameHolder to say which VM holds an image.
func definedDisks(b Backend) func() (map[string][]string, error) {
	return func() (map[string][]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		list, err := b.List(ctx)
		if err != nil {
			return nil, err
		}
		disks := make(map[string][]string, len(list))
		for _, s := range list {
			def, _ := b.Definition(s.Name)
			if def == nil {
				continue
			}
			for _, d := range def.Disks {
				disks[s.Name] = append(disks[s.Name], d.Path)
			}
		}
		return disks, nil
	}
}

// importJob is a running disk import: its progress, and the channel closed
// when it ends.
type importJob struct {
	progress chan progressMsg
	done     chan struct{}
	cancel   context.CancelFunc
}

// convertCmd runs an import of src into dst, reporting progress on job.
func convertCmd(ctx context.Context, b Backend, job *importJob, src, dst string, format disk.Format) tea.Cmd {
	progress, done := job.progress, job.done
	return func() tea.Msg {
		defer close(done)
		err := b.ConvertDisk(ctx, src, dst, disk.ConvertOptions{
			Format: format,
			Progress: func(d, t int64) {
				select {
				case progress <- progressMsg{done: d, total: t}:
				default:
					// The TUI has not drawn the last one yet: keep the
					// newest only.
					select {
					case <-progress:
					default:
					}
					select {
					case progress <- progressMsg{done: d, total: t}:
					default:
					}
				}
			},
		})
		return diskDoneMsg{path: dst, verb: "imported", err: disk.NameHolder(err, definedDisks(b))}
	}
}

// waitProgress waits for the next progress report of an import; it is
// issued again after each one, and returns nil when the import ended.
func waitProgress(job *importJob) tea.Cmd {
	progress, done := job.progress, job.done
	return func() tea.Msg {
		select {
		case p := <-progress:
			return p
		case <-done:
			return nil
		}
	}
}
