package ui

import (
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
)

// helpModel is the ? screen: every key, and a few words on what they do.
type helpModel struct {
	common
	width, height int
	help          help.Model
}

func newHelp(c common) *helpModel {
	h := help.New()
	h.ShowAll = true
	return &helpModel{common: c, width: defaultWidth, height: defaultHeight, help: h}
}

// SetSize sets the size of the screen.
func (h *helpModel) SetSize(width, height int) {
	h.width, h.height = width, height
	h.help.Width = width
}

// ShortHelp is the way back.
func (h *helpModel) ShortHelp() []key.Binding { return []key.Binding{h.keys.Help, h.keys.Back} }

// FullHelp is every key of the table screen.
func (h *helpModel) FullHelp() [][]key.Binding { return h.keys.FullHelp() }

// Update does nothing: the model closes the screen.
func (h *helpModel) Update(tea.Msg) tea.Cmd { return nil }

// View draws the full help.
func (h *helpModel) View() string {
	var b strings.Builder
	b.WriteString(h.styles.Title.Render("vmtui keys"))
	b.WriteString("\n\n")
	b.WriteString(h.help.FullHelpView(h.FullHelp()))
	b.WriteString("\n\n")
	b.WriteString(strings.Join([]string{
		"The table is the one `vmtui --list` prints. It follows QEMU's events:",
		"a pause, a resume or a stop shows at once, whoever did it.",
		"x powers the guest down, X kills QEMU (both ask y/n). D removes the",
		"definition of a stopped vm (asks; disks are kept). e opens it in",
		"$EDITOR. o sorts by id, name, state or memory. In the console, ~.",
		"(after a newline) or Ctrl-] returns here. In forms: tab/shift+tab",
		"move, enter submits, esc cancels (an import too). q quits and",
		"leaves every vm running. S lists a vm's snapshots: there t takes",
		"one (asks its tag), r reverts to one, D deletes one (both ask y/n).",
		"In a running vm's details, m sets its memory (up to max_memory), a",
		"attaches a disk until it stops, u detaches one (asks y/n).",
	}, "\n"))
	b.WriteString("\n\n")
	b.WriteString(h.styles.Faint.Render("? or esc: back to the table"))
	return clip(b.String(), h.width, h.height)
}
