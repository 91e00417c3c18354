package ui

import (
	"fmt"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
)

// confirmModel is a question waiting for y or n in the status line, and
// the operation y starts.
type confirmModel struct {
	common
	width  int
	op     *operation
	name   string
	prompt string
	answer answer
}

// answer is what a key said to a question.
type answer int

const (
	unanswered answer = iota
	answerYes
	answerNo
)

func newConfirm(c common, op *operation, name string) *confirmModel {
	return &confirmModel{common: c, op: op, name: name, width: defaultWidth,
		prompt: printable(fmt.Sprintf(op.prompt, name))}
}

// SetSize sets the width of the line.
func (c *confirmModel) SetSize(width, _ int) { c.width = width }

// ShortHelp is y and n.
func (c *confirmModel) ShortHelp() []key.Binding { return []key.Binding{c.keys.Yes, c.keys.No} }

// FullHelp is y and n.
func (c *confirmModel) FullHelp() [][]key.Binding { return [][]key.Binding{c.ShortHelp()} }

// Update takes the answer: y, or n (esc, q too).
func (c *confirmModel) Update(msg tea.Msg) tea.Cmd {
	if k, ok := msg.(tea.KeyMsg); ok {
		switch {
		case key.Matches(k, c.keys.Yes):
			c.answer = answerYes
		case key.Matches(k, c.keys.No), key.Matches(k, c.keys.Quit):
			c.answer = answerNo
		}
	}
	return nil
}

// View is the question.
func (c *confirmModel) View() string { return c.styles.Label.Render(c.prompt) }
