module github.com/hookline/hookline/cmd/hookline-dev

go 1.26.0

replace (
	github.com/hookline/hookline/pkg => ../../pkg
	github.com/hookline/hookline/proto => ../../proto
)

replace (
	github.com/hookline/hookline/services/deadletter => ../../services/deadletter
	github.com/hookline/hookline/services/dispatcher => ../../services/dispatcher
	github.com/hookline/hookline/services/fanout => ../../services/fanout
	github.com/hookline/hookline/services/ingest => ../../services/ingest
)
