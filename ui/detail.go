package ui

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/units"
)

// The detail view of the selected VM: its definition, disks with their
// backing chains, port forwards, QEMU's command line, CPU and memory
// charts, and the tail of the serial log.

// sparkWidth is the number of samples a chart shows.
const sparkWidth = 40

// sparkLevels are the bars of a sparkline, lowest first.
var sparkLevels = []rune("▁▂▃▄▅▆▇█")

// sparkline draws the last width values, scaled to [0, top].
func sparkline(values []float64, width int, top float64) string {
	if len(values) > width {
		values = values[len(values)-width:]
	}
	var b strings.Builder
	for _, v := range values {
		i := 0
		if top > 0 {
			i = int(v / top * float64(len(sparkLevels)-1))
		}
		b.WriteRune(sparkLevels[min(max(i, 0), len(sparkLevels)-1)])
	}
	return b.String()
}

func maxOf(values []float64) float64 {
	m := 0.0
	for _, v := range values {
		m = max(m, v)
	}
	return m
}

// detailModel is the detail view of one VM.
type detailModel struct {
	common
	width, height int
	help          help.Model
	name          string     // the VM shown
	data          *detailMsg // nil until loaded
	live          *liveForm  // a live change being asked for (live.go), or nil
}

func newDetail(c common, name string) *detailModel {
	h := help.New()
	h.ShortSeparator = "  " // every key on 80 columns
	return &detailModel{common: c, name: name, help: h, width: defaultWidth, height: defaultHeight}
}

// SetSize sets the size of the whole view.
func (d *detailModel) SetSize(width, height int) {
	d.width, d.height = width, height
	d.help.Width = width
}

// ShortHelp is the help line at the bottom.
func (d *detailModel) ShortHelp() []key.Binding {
	k := d.keys
	if d.live != nil {
		return d.live.liveHelp(k)
	}
	return []key.Binding{k.Back, k.Start, k.Stop, k.ForceStop, k.Pause, k.Console, k.Edit, k.Remove, k.Snapshots,
		k.SetMemory, k.AttachDisk, k.DetachDisk}
}

// FullHelp is ShortHelp in one column.
func (d *detailModel) FullHelp() [][]key.Binding { return [][]key.Binding{d.ShortHelp()} }

// Update takes what was loaded of the VM.
func (d *detailModel) Update(msg tea.Msg) tea.Cmd {
	if msg, ok := msg.(detailMsg); ok && msg.name == d.name {
		d.data = &msg
	}
	return nil
}

// View draws the detail view.
func (d *detailModel) View() string {
	st, ok := d.vms.get(d.name)
	if !ok {
		return clip("no vm selected\n\n"+d.styles.Faint.Render("esc: back"), d.width, d.height)
	}
	s := d.styles
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	head := fmt.Sprintf("%s %s (id %d)  %s", s.Title.Render("vmtui ›"), s.Label.Render(st.DisplayName()), st.ID, s.state(st.State).Render(string(st.State)))
	if st.Running() {
		head += fmt.Sprintf("  pid %d  %s  curmem %s", st.PID, st.TTYName(), units.FormatSize(st.CurMem))
	}
	if busy := d.vms.busyText(); busy != "" {
		head += "  " + busy
	}
	add("%s", head)
	if st.Err != "" {
		add("%s", s.Error.Render("error: "+st.Err))
	}

	dm := d.data
	switch {
	case dm == nil:
		add("")
		add("%s", s.Faint.Render("loading…"))
	case dm.def == nil:
		add("%s", s.Error.Render("definition: "+oneLine(dm.defErr)))
	default:
		add("%s", s.Section.Render("Definition"))
		def := dm.def
		add("  memory %s  vcpus %d  accel %s  machine %s  boot %s", units.FormatSize(def.Memory), def.CPUs,
			orDash(def.Accel), orDash(def.Machine), orDash(string(def.Boot)))
		if dm.defErr != nil {
			add("  %s", s.Error.Render(oneLine(dm.defErr)))
		}
		if tpl := cmp.Or(st.Template, def.Template); tpl != "" {
			add("  template %s  %s", tpl, s.Faint.Render("(an instance: its disks are overlays on the template's)"))
		}
		for _, kv := range [][2]string{{"kernel", def.Kernel}, {"initrd", def.Initrd}, {"append", def.Append}, {"cdrom", def.CDROM}} {
			if kv[1] != "" {
				add("  %-6s %s", kv[0], kv[1])
			}
		}
		add("  file   %s", def.File)
		add("%s", s.Section.Render("Disks"))
		if len(dm.disks) == 0 {
			add("  none")
		}
		for _, dd := range dm.disks {
			lines = append(lines, diskLines(dd, *s)...)
		}
		for _, p := range st.Attached {
			add("  %s  %s", p, s.Faint.Render("attached while it runs (u detaches)"))
		}
		if st.Running() && st.MaxMem != def.Memory {
			add("  %s", s.Faint.Render("memory now "+units.FormatSize(st.MaxMem)+" (m changes it)"))
		}
		add("%s  %s", s.Section.Render("Network"), networks(def))
		// The device model, a line for each key set; the CID a running
		// guest was given.
		devs := *def
		if st.CID != 0 {
			devs.CID = st.CID
		}
		if lines := devs.DeviceSummary(); len(lines) > 0 {
			add("%s", s.Section.Render("Devices"))
			for _, l := range lines {
				add("  %s", l)
			}
		}
	}
	if h := d.vms.history[st.Name]; st.Running() && h != nil {
		cpuNow, memNow := 0.0, 0.0
		if len(h.cpu) > 0 {
			cpuNow = h.cpu[len(h.cpu)-1]
		}
		if len(h.mem) > 0 {
			memNow = h.mem[len(h.mem)-1]
		}
		add("%s %-*s %5.1f%%", s.Label.Render("CPU"), sparkWidth, sparkline(h.cpu, sparkWidth, max(100, maxOf(h.cpu))), cpuNow)
		add("%s %-*s %s", s.Label.Render("MEM"), sparkWidth, sparkline(h.mem, sparkWidth, maxOf(h.mem)), units.FormatSize(int64(memNow)))
	}
	if len(st.Cmdline) > 0 {
		add("%s", s.Section.Render("QEMU command line"))
		lines = append(lines, wrap(shellJoin(st.Cmdline), d.width-2, 4, "  ")...)
	}
	if dm != nil && len(dm.serial) > 0 {
		add("%s", s.Section.Render("Serial log"))
		for _, l := range dm.serial {
			add("  %s", l)
		}
	}
	// The help lines stay at the bottom: the rest is cut to fit.
	keys := helpLines(d.help, d.ShortHelp(), d.width)
	var live []string
	if d.live != nil {
		live = d.live.view(s, d.width)
	}
	room := max(1, d.height-len(keys)-len(live))
	if len(lines) > room {
		lines = lines[:room]
	}
	for len(lines) < room {
		lines = append(lines, "")
	}
	lines = append(lines, live...)
	return clip(strings.Join(lines, "\n")+"\n"+strings.Join(keys, "\n"), d.width, d.height)
}

// helpLines draws the keys of a help bar on as many lines of width as
// they need, at most two (the second cut with … as help cuts a line).
func helpLines(h help.Model, keys []key.Binding, width int) []string {
	h.Width = 0
	for i := len(keys); i > 0; i-- {
		if first := h.ShortHelpView(keys[:i]); ansi.StringWidth(first) <= width || i == 1 {
			if i == len(keys) {
				return []string{first}
			}
			h.Width = width
			return []string{first, h.ShortHelpView(keys[i:])}
		}
	}
	return []string{""}
}

// diskLines describes a disk and its backing chain.
func diskLines(dd diskDetail, s Styles) []string {
	if dd.err != nil {
		return []string{"  " + dd.path + "  " + s.Error.Render(oneLine(dd.err))}
	}
	var out []string
	indent := "  "
	for info := dd.info; info != nil; info = info.BackingImage {
		out = append(out, fmt.Sprintf("%s%s  %s  %s (on disk %s)", indent, info.Filename, info.Format,
			units.FormatSize(info.VirtualSize), units.FormatSize(info.ActualSize)))
		if info.BackingError != "" {
			out = append(out, indent+"  "+s.Error.Render("backing: "+info.BackingError))
		}
		if indent == "  " {
			indent = "   └ backing "
		} else {
			indent = "     " + indent[3:]
		}
	}
	return out
}

// networks describes the networks and port forwards of a definition.
func networks(def *config.VM) string {
	if len(def.Networks) == 0 {
		return "none"
	}
	var parts []string
	for _, n := range def.Networks {
		p := string(n.Type)
		if n.Bridge != "" {
			p += " " + n.Bridge
		}
		if len(n.HostFwd) > 0 {
			p += " ports " + strings.Join(n.HostFwd, ", ")
		}
		if n.MAC != "" {
			p += " mac " + n.MAC
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shellJoin quotes argv for a shell, as a person would copy it.
func shellJoin(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'\\$`;&|<>()*?[]{}!#~") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// wrap breaks s into lines of at most width cells, at most n lines (the
// last ending in … when cut), each after indent.
func wrap(s string, width, n int, indent string) []string {
	width = max(10, width-len(indent))
	var out []string
	for len(s) > 0 && len(out) < n {
		if ansi.StringWidth(s) <= width {
			out = append(out, indent+s)
			s = ""
			break
		}
		cut := width
		if i := strings.LastIndexByte(s[:width], ' '); i > width/2 {
			cut = i
		}
		out = append(out, indent+s[:cut])
		s = strings.TrimLeft(s[cut:], " ")
	}
	if s != "" && len(out) > 0 {
		last := out[len(out)-1]
		out[len(out)-1] = ansi.Truncate(last, width+len(indent)-1, "") + "…"
	}
	return out
}
