package ui

import (
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"
)

func TestEditorCommand(t *testing.T) {
	for _, tc := range []struct {
		visual, editor string
		want           []string
	}{
		{"", "", []string{"vi"}},
		{"  ", "", []string{"vi"}},
		{"", " \t ", []string{"vi"}},
		{" ", " ", []string{"vi"}},
		{"", "nano", []string{"nano"}},
		{"   ", "nano -w", []string{"nano", "-w"}},
		{"code --wait", "nano", []string{"code", "--wait"}},
		{" emacs  -nw ", "", []string{"emacs", "-nw"}},
	} {
		if got := editorCommand(tc.visual, tc.editor); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("editorCommand(%q, %q) = %q, want %q", tc.visual, tc.editor, got, tc.want)
		}
	}
}

// TestEditBlankEditor presses e with an editor setting that is only
// spaces: it used to panic (index out of range).
func TestEditBlankEditor(t *testing.T) {
	for _, editor := range []string{" ", "\t  "} {
		m := New(Options{Backend: newFake(), Editor: editor})
		list := newFake().list
		m = update(t, m, listMsg{list: list, at: time.Now()})
		if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("e")}); cmd == nil {
			t.Errorf("editor %q: e gave no command", editor)
		}
	}
}

// TestEditUnrunnableEditor: an editor that cannot be run is an error in
// the status line, and the terminal is not given away.
func TestEditUnrunnableEditor(t *testing.T) {
	for _, editor := range []string{"/nonexistent/vmtui-editor", "vmtui-no-such-editor --flag"} {
		m := New(Options{Backend: newFake(), Editor: editor})
		m = update(t, m, listMsg{list: newFake().list, at: time.Now()})
		_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("e")})
		if cmd == nil {
			t.Fatalf("editor %q: e gave no command", editor)
		}
		msg, ok := cmd().(editedMsg)
		if !ok {
			t.Fatalf("editor %q: e gave %T, want an editedMsg (the editor cannot run)", editor, msg)
		}
		m = update(t, m, msg)
		name := strings.Fields(editor)[0]
		want := `edit web: editor "` + name + `": `
		if !m.statusErr || !strings.HasPrefix(m.status, want) || !strings.HasSuffix(m.status, "(set $VISUAL or $EDITOR)") {
			t.Errorf("editor %q: status %q (error %v), want an error starting %q", editor, m.status, m.statusErr, want)
		}
	}
}

// TestProgramEditor runs the editor through the whole program: one that
// cannot run says so in the status line, one that runs leads to the check
// of the definition.
func TestProgramEditor(t *testing.T) {
	for _, tc := range []struct {
		editor, want string
	}{
		{"vmtui-no-such-editor", `edit web: editor "vmtui-no-such-editor": executable file not found`},
		{"true", "web: definition saved and valid"},
	} {
		t.Run(tc.editor, func(t *testing.T) {
			tm := teatest.NewTestModel(t, New(Options{Backend: newFake(), Editor: tc.editor}), teatest.WithInitialTermSize(120, 24))
			teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
				return bytes.Contains(b, []byte("running web"))
			}, teatest.WithDuration(10*time.Second))
			tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("e")})
			teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
				return bytes.Contains(b, []byte(tc.want))
			}, teatest.WithDuration(10*time.Second))
			tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
			tm.WaitFinished(t, teatest.WithFinalTimeout(10*time.Second))
			io.Copy(io.Discard, tm.FinalOutput(t))
		})
	}
}
