package qmptest_test

import (
	"bufio"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/vm/qmp/qmptest"
)

// TestNegotiation speaks raw QMP to the fake and checks that it answers as
// QEMU 7.2 does before, during and after capabilities negotiation.
func TestNegotiation(t *testing.T) {
	s := qmptest.NewServer()
	defer s.Close()
	s.On("stop").Args(map[string]any{}).Event("STOP", nil).Return(nil)
	conn := s.Pipe()
	defer conn.Close()
	r := bufio.NewReader(conn)
	steps := []struct {
		send string // "" to read only
		want string // the next line, without CRLF; prefix match
	}{
		{"", `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}`},
		{`{"execute": "stop", "id": 1}`, `{"error":{"class":"CommandNotFound","desc":"Expecting capabilities negotiation with 'qmp_capabilities'"},"id":1}`},
		{`{"execute": "qmp_capabilities"}`, `{"return":{}}`},
		{`{"execute": "qmp_capabilities", "id": "again"}`, `{"error":{"class":"CommandNotFound","desc":"Capabilities negotiation is already complete, command ignored"},"id":"again"}`},
		{`{"execute": "stop", "id": {"any": ["json"]}}`, `{"event":"STOP","timestamp":{"microseconds":`},
		{"", `{"id":{"any":["json"]},"return":{}}`},
		{`{"execute": "stop", "arguments": {"x": 1}, "id": 2}`, `{"error":{"class":"CommandNotFound","desc":"The command stop has not been found"},"id":2}`},
	}
	for _, st := range steps {
		if st.send != "" {
			if _, err := conn.Write([]byte(st.send + "\n")); err != nil {
				t.Fatal(err)
			}
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %s: %v", st.send, err)
		}
		if !strings.HasSuffix(line, "\r\n") {
			t.Errorf("line %q does not end in CRLF", line)
		}
		if got := strings.TrimSuffix(line, "\r\n"); !strings.HasPrefix(got, st.want) {
			t.Errorf("after %s:\ngot  %s\nwant %s", st.send, got, st.want)
		}
	}
	if got := strings.Join(s.Executed(), " "); got != "stop stop stop" {
		t.Errorf("Executed: got %q, want %q", got, "stop stop stop")
	}
}
