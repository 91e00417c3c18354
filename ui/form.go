package ui

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
)

// A form is a column of labelled text inputs, each checked as it is typed,
// plus a check of the whole form. Its keys are a FormKeyMap: tab, shift+tab
// and the arrows move between fields; enter on the last field (or ctrl+s
// anywhere) submits; esc cancels.

// field is one input of a form.
type field struct {
	label string
	hint  string // shown when the field is fine
	input textinput.Model
	check func(string) error
	err   error
}

// form is the state of a form.
type form struct {
	title  string
	fields []field
	focus  int
	// whole checks the form as a whole once every field is fine.
	whole func() error
	err   error // from whole, or from the submission
	busy  bool  // submitted, waiting for the result
}

// staticCursor stops an input's cursor from blinking: a blinking cursor
// redraws the screen twice a second for nothing.
func staticCursor(ti *textinput.Model) {
	ti.Cursor.SetMode(cursor.CursorStatic)
}

// newField returns a field.
func newField(label, placeholder, hint string, check func(string) error) field {
	ti := textinput.New()
	ti.Prompt = ""
	ti.Placeholder = placeholder
	ti.CharLimit = 4096
	ti.Width = 40
	staticCursor(&ti)
	return field{label: label, hint: hint, input: ti, check: check}
}

// value returns the trimmed value of field i.
func (f *form) value(i int) string { return strings.TrimSpace(f.fields[i].input.Value()) }

// focusOn focuses field i.
func (f *form) focusOn(i int) {
	f.fields[f.focus].input.Blur()
	f.focus = (i + len(f.fields)) % len(f.fields)
	f.fields[f.focus].input.Focus()
}

// validate checks every field, then the whole form; it reports whether
// the form can be submitted.
func (f *form) validate() bool {
	ok := true
	for i := range f.fields {
		fl := &f.fields[i]
		fl.err = nil
		if fl.check != nil {
			fl.err = fl.check(strings.TrimSpace(fl.input.Value()))
		}
		if fl.err != nil {
			ok = false
		}
	}
	f.err = nil
	if ok && f.whole != nil {
		f.err = f.whole()
		ok = f.err == nil
	}
	return ok
}

// formResult is what a key did to a form.
type formResult int

const (
	formEditing formResult = iota
	formSubmit
	formCancel
)

// update passes a message to the form.
func (f *form) update(keys FormKeyMap, msg tea.Msg) (formResult, tea.Cmd) {
	if k, ok := msg.(tea.KeyMsg); ok {
		switch {
		case key.Matches(k, keys.Cancel):
			return formCancel, nil
		case key.Matches(k, keys.Next):
			f.focusOn(f.focus + 1)
			return formEditing, nil
		case key.Matches(k, keys.Prev):
			f.focusOn(f.focus - 1)
			return formEditing, nil
		case key.Matches(k, keys.Submit):
			if f.validate() {
				return formSubmit, nil
			}
			return formEditing, nil
		case key.Matches(k, keys.Enter):
			if f.focus < len(f.fields)-1 {
				f.focusOn(f.focus + 1)
				return formEditing, nil
			}
			if f.validate() {
				return formSubmit, nil
			}
			return formEditing, nil
		}
	}
	var cmd tea.Cmd
	f.fields[f.focus].input, cmd = f.fields[f.focus].input.Update(msg)
	f.validate()
	return formEditing, cmd
}

// view draws a form in width columns; spin is the spinner's frame.
func (f *form) view(s *Styles, width int, spin string) string {
	var b strings.Builder
	b.WriteString(s.Title.Render(f.title))
	b.WriteString("\n\n")
	labelWidth := 0
	for _, fl := range f.fields {
		labelWidth = max(labelWidth, len(fl.label))
	}
	inputWidth := max(10, min(40, width-labelWidth-6))
	for i, fl := range f.fields {
		mark := "  "
		label := fmt.Sprintf("%-*s", labelWidth, fl.label)
		if i == f.focus {
			mark = "› "
			label = s.Focused.Render(label)
		} else {
			label = s.Label.Render(label)
		}
		fl.input.Width = inputWidth
		fmt.Fprintf(&b, "%s%s  %s\n", mark, label, fl.input.View())
		switch {
		case fl.err != nil:
			indent := strings.Repeat(" ", labelWidth+4)
			for _, l := range wrap("✗ "+oneLine(fl.err), width-len(indent), 2, "") {
				fmt.Fprintf(&b, "%s%s\n", indent, s.FieldError.Render(l))
			}
		case i == f.focus && fl.hint != "":
			fmt.Fprintf(&b, "  %*s  %s\n", labelWidth, "", s.Faint.Render(fl.hint))
		}
	}
	b.WriteString("\n")
	switch {
	case f.err != nil:
		b.WriteString(s.Error.Render(strings.Join(wrap("✗ "+oneLine(f.err), width, 3, ""), "\n")))
	case f.busy:
		b.WriteString(spin + " working…")
	}
	b.WriteString("\n")
	return b.String()
}

// absPath makes a typed path absolute against cwd ("" stays "").
func absPath(cwd, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(cwd, p)
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
