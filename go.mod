module vmtui

go 1.26.8
