package ui

import (
	"strconv"
	"strings"

	"github.com/charmbracelet/lipgloss"

	"github.com/vmtui/vmtui/vm"
)

// Styles are every style the TUI draws with. Colours go through lipgloss,
// which drops them when NO_COLOR is set or the terminal has none; nothing
// the user needs is said by colour alone (the cursor is also a "›").
type Styles struct {
	Title      lipgloss.Style
	Header     lipgloss.Style
	Selected   lipgloss.Style
	Status     lipgloss.Style
	Error      lipgloss.Style
	Label      lipgloss.Style
	Faint      lipgloss.Style
	Section    lipgloss.Style
	FieldError lipgloss.Style
	Focused    lipgloss.Style
	States     map[vm.State]lipgloss.Style
}

// DefaultStyles returns the default styles.
func DefaultStyles() Styles {
	return Styles{
		Title:      lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12")),
		Header:     lipgloss.NewStyle().Bold(true),
		Selected:   lipgloss.NewStyle().Reverse(true),
		Status:     lipgloss.NewStyle().Foreground(lipgloss.Color("10")),
		Error:      lipgloss.NewStyle().Foreground(lipgloss.Color("9")).Bold(true),
		Label:      lipgloss.NewStyle().Bold(true),
		Faint:      lipgloss.NewStyle().Faint(true),
		Section:    lipgloss.NewStyle().Bold(true).Underline(true),
		FieldError: lipgloss.NewStyle().Foreground(lipgloss.Color("9")),
		Focused:    lipgloss.NewStyle().Foreground(lipgloss.Color("12")).Bold(true),
		States: map[vm.State]lipgloss.Style{
			vm.StateStarting: lipgloss.NewStyle().Foreground(lipgloss.Color("14")),
			vm.StateRunning:  lipgloss.NewStyle().Foreground(lipgloss.Color("10")),
			vm.StatePaused:   lipgloss.NewStyle().Foreground(lipgloss.Color("11")),
			vm.StateStopping: lipgloss.NewStyle().Foreground(lipgloss.Color("13")),
			vm.StateStopped:  lipgloss.NewStyle().Faint(true),
			vm.StateSaved:    lipgloss.NewStyle().Foreground(lipgloss.Color("12")),
			vm.StateBroken:   lipgloss.NewStyle().Foreground(lipgloss.Color("9")).Bold(true),
		},
	}
}

// state returns the style of a VM state.
func (s Styles) state(st vm.State) lipgloss.Style {
	if style, ok := s.States[st]; ok {
		return style
	}
	return lipgloss.NewStyle()
}

// darkBackground tells from COLORFGBG ("fg;bg", as rxvt, Konsole and others
// set it; bg a colour number) whether the terminal's background is dark, as
// termenv reads it: colours 0 to 6 and 8 are dark. Without it the
// background is taken to be dark, as on most terminals.
func darkBackground(colorFGBG string) bool {
	i := strings.LastIndexByte(colorFGBG, ';')
	if i < 0 {
		return true
	}
	bg, err := strconv.Atoi(colorFGBG[i+1:])
	if err != nil {
		return true
	}
	return bg < 7 || bg == 8
}
