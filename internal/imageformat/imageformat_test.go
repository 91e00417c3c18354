package imageformat

import "testing"

func TestParse(t *testing.T) {
	for in, want := range map[string]Format{
		"qcow2": Qcow2, "QCOW2": Qcow2, " raw ": Raw, "Raw": Raw,
		"qcow": Qcow, "QCOW ": Qcow, "": "", "vmdk": "", "qcow1": "", "raw:": "",
	} {
		got, err := Parse(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestParseExact(t *testing.T) {
	for in, want := range map[string]Format{"qcow2": Qcow2, "raw": Raw, "qcow": Qcow, "": ""} {
		if got, err := ParseExact(in); got != want || err != nil {
			t.Errorf("ParseExact(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"QCOW2", " raw", "vmdk"} {
		if got, err := ParseExact(in); err == nil {
			t.Errorf("ParseExact(%q) = %q, want an error", in, got)
		}
	}
}

func TestDiskFormat(t *testing.T) {
	tests := []struct {
		name, flag string
		format     Format
		path       string
		errText    string
	}{
		{"a.qcow2", "", Qcow2, "a.qcow2", ""},
		{"a.QCOW2", "", Qcow2, "a.QCOW2", ""},
		{"a.raw", "", Raw, "a.raw", ""},
		{"a.img", "", Raw, "a.img", ""},
		{"dir.img/a", "", Qcow2, "dir.img/a", ""},
		{"a", "", Qcow2, "a", ""},
		{"a.iso", "", Qcow2, "a.iso", ""},
		{"a.img", "qcow2", Qcow2, "a.img", ""},
		{"a.qcow2", "RAW", Raw, "a.qcow2", ""},
		{"raw:a.qcow2", "", Raw, "a.qcow2", ""},
		{"qcow2:a.img", "", Qcow2, "a.img", ""},
		{"qcow2:a.img", "qcow2", Qcow2, "a.img", ""},
		{"raw:", "", Qcow2, "raw:", ""}, // no name after the prefix: the whole is a name
		{"qcow:a.qcow2", "", Qcow, "a.qcow2", ""},
		{"qcow2:a.qcow", "", Qcow2, "a.qcow", ""},
		{"a.qcow", "", Qcow, "a.qcow", ""},
		{"a.img", "qcow", Qcow, "a.img", ""},
		{"qcow:a", "raw", "", "", "qcow:a: the qcow: prefix conflicts with the format raw"},
		{"raw:a", "qcow2", "", "", "raw:a: the raw: prefix conflicts with the format qcow2"},
		{"a", "vmdk", "", "", `unknown image format "vmdk" (want qcow2, raw or qcow)`},
	}
	for _, tt := range tests {
		format, path, err := ForNewImage(tt.name, tt.flag)
		if tt.errText != "" {
			if err == nil || err.Error() != tt.errText {
				t.Errorf("ForNewImage(%q, %q) error = %v, want %q", tt.name, tt.flag, err, tt.errText)
			}
			continue
		}
		if err != nil || format != tt.format || path != tt.path {
			t.Errorf("ForNewImage(%q, %q) = %s, %q, %v; want %s, %q", tt.name, tt.flag, format, path, err, tt.format, tt.path)
		}
	}
}
