package ui

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/charmbracelet/x/ansi"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/internal/units"
)

// The detail view of the selected VM: its definition, disks with their
// backing chains, port forwards, QEMU's command line, CPU and memory
// charts, and the tail of the serial log.

// sparkWidth is the number of refreshes a chart shows.
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

func (m Model) viewDetail() string {
	st, ok := m.current()
	if !ok {
		return m.clip("no vm selected\n\n" + m.styles.Faint.Render("esc: back"))
	}
	s := m.styles
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	head := fmt.Sprintf("%s %s (id %d)  %s", s.Title.Render("vmtui ›"), s.Label.Render(st.DisplayName()), st.ID, s.state(st.State).Render(string(st.State)))
	if st.Running() {
		head += fmt.Sprintf("  pid %d  %s  curmem %s", st.PID, st.TTYName(), units.FormatSize(st.CurMem))
	}
	if len(m.busy) > 0 {
		head += "  " + m.spin.View() + " " + m.busyText()
	}
	add("%s", head)
	if st.Err != "" {
		add("%s", s.Error.Render("error: "+st.Err))
	}

	d := m.detail
	switch {
	case d == nil:
		add("")
		add("%s", s.Faint.Render("loading…"))
	case d.def == nil:
		add("%s", s.Error.Render("definition: "+oneLine(d.defErr)))
	default:
		add("%s", s.Section.Render("Definition"))
		def := d.def
		add("  memory %s  vcpus %d  accel %s  machine %s  boot %s", units.FormatSize(def.Memory), def.CPUs,
			orDash(def.Accel), orDash(def.Machine), orDash(string(def.Boot)))
		if d.defErr != nil {
			add("  %s", s.Error.Render(oneLine(d.defErr)))
		}
		for _, kv := range [][2]string{{"kernel", def.Kernel}, {"initrd", def.Initrd}, {"append", def.Append}, {"cdrom", def.CDROM}} {
			if kv[1] != "" {
				add("  %-6s %s", kv[0], kv[1])
			}
		}
		add("  file   %s", def.File)
		add("%s", s.Section.Render("Disks"))
		if len(d.disks) == 0 {
			add("  none")
		}
		for _, dd := range d.disks {
			lines = append(lines, diskLines(dd, s)...)
		}
		add("%s  %s", s.Section.Render("Network"), networks(def))
	}
	if h := m.history[st.Name]; st.Running() && h != nil {
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
		lines = append(lines, wrap(shellJoin(st.Cmdline), m.width-2, 4, "  ")...)
	}
	if d != nil && len(d.serial) > 0 {
		add("%s", s.Section.Render("Serial log"))
		for _, l := range d.serial {
			add("  %s", l)
		}
	}
	// The help line stays at the bottom: the rest is cut to fit.
	room := max(1, m.height-1)
	if len(lines) > room {
		lines = lines[:room]
	}
	for len(lines) < room {
		lines = append(lines, "")
	}
	footer := m.styles.Faint.Render("esc/enter: back  s start  x stop  X force  p pause  c console  e edit  D remove")
	return m.clip(strings.Join(lines, "\n") + "\n" + footer)
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
