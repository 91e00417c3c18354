package ui

import (
	"context"
	"fmt"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/seriallog"
	"github.com/vmtui/vmtui/vm"
)

// The tea.Cmds that do the TUI's I/O. Each closes over copies of what it
// needs (the backend is an interface value, safe to share), never over the
// model.

// listTimeout bounds one reading of the VM list, or of one VM.
const listTimeout = 10 * time.Second

// serialTailLines is how many lines of the serial log the detail view reads.
const serialTailLines = 8

// listCmd reads the list of the VMs, and has w (if any) follow the running
// ones.
func listCmd(b Backend, w Watcher) tea.Cmd {
	return func() tea.Msg {
		at := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
		defer cancel()
		list, err := b.List(ctx)
		if w != nil {
			for _, st := range list {
				w.Watch(st)
			}
		}
		return listMsg{list: list, err: err, at: at}
	}
}

// statusCmd reads the status of VM name, and has w (if any) follow it if
// it runs.
func statusCmd(b Backend, w Watcher, name string) tea.Cmd {
	return func() tea.Msg {
		at := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
		defer cancel()
		st, err := b.Status(ctx, name)
		if err == nil && w != nil {
			w.Watch(st)
		}
		return statusMsg{name: name, st: st, err: err, at: at}
	}
}

// sampleCmd reads /proc for the QEMUs of running, and the backend's stamp.
func sampleCmd(b Backend, running []vm.Status) tea.Cmd {
	return func() tea.Msg {
		msg := sampleMsg{samples: make(map[string]procSample, len(running)), at: time.Now()}
		for _, st := range running {
			ps, err := b.Sample(st)
			msg.samples[st.Name] = procSample{ps: ps, err: err}
		}
		msg.stamp = b.Stamp()
		return msg
	}
}

// waitWatch waits for the next event of w; it is issued again after each.
// A closed channel ends the stream.
func waitWatch(w Watcher) tea.Cmd {
	events := w.Events()
	return func() tea.Msg {
		ev, ok := <-events
		if !ok {
			return nil
		}
		return watchMsg{ev: ev}
	}
}

// tickCmd waits d, then asks for tick gen.
func tickCmd(d time.Duration, gen int) tea.Cmd {
	return tea.Tick(d, func(at time.Time) tea.Msg { return tickMsg{gen: gen, at: at} })
}

// closeScreen closes the screen shown.
func closeScreen() tea.Msg { return closeMsg{} }

// notice returns a command that puts a message in the status line.
func notice(isErr bool, format string, args ...any) tea.Cmd {
	text := fmt.Sprintf(format, args...)
	return func() tea.Msg { return noticeMsg{text: text, isErr: isErr} }
}

// opCmd runs operation op on VM name.
func opCmd(b Backend, op *operation, name string) tea.Cmd {
	return func() tea.Msg {
		return opDoneMsg{op: op, name: name, err: op.do(context.Background(), b, name)}
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
