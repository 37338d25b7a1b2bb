// Package version holds the Hookline version, set at build time with
// -ldflags "-X github.com/hookline/hookline/pkg/version.Version=…".
package version

// Version of this build.
var Version = "0.1.0-dev"

// UserAgent is sent on every webhook request (CONTRACT 3.1).
func UserAgent() string { return "Hookline/" + Version }
