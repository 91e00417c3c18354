module vmtui

go 1.26.8

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pelletier/go-toml/v2 v2.4.3
	golang.org/x/sys v0.49.0
)
