module github.com/hookline/hookline/cmd/hookctl

go 1.26.0

replace (
	github.com/hookline/hookline/pkg => ../../pkg
	github.com/hookline/hookline/proto => ../../proto
)

require github.com/spf13/cobra v1.10.2

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
)
