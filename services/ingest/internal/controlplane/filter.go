package controlplane

import "github.com/hookline/hookline/pkg/filter"

// compileFilter checks that a filter expression compiles.
func compileFilter(expr string) error {
	_, err := filter.Compile(expr)
	return err
}
