package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// replayProgress is what `replay --wait` shows of a replay.
type replayProgress struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Matched   int    `json:"matched"`
	Replayed  int    `json:"replayed"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
}

func (p replayProgress) line() string {
	return fmt.Sprintf("replay %s %s: %d/%d replayed, %d succeeded, %d failed",
		p.ID, p.State, p.Replayed, p.Matched, p.Succeeded, p.Failed)
}

// progressView shows a replay's progress as it changes.
type progressView interface {
	update(p replayProgress)
	// finish shows the last state and ends the view.
	finish(p replayProgress)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) //nolint:gosec // a file descriptor fits in an int
}

// newProgressView returns a live progress bar on a terminal and plain
// progress lines, one per change, anywhere else (a pipe, a log, a CI job).
func newProgressView(w io.Writer, terminal bool) progressView {
	if !terminal {
		return &lineView{w: w}
	}
	return &barView{w: w}
}

// lineView prints a line whenever the progress changes.
type lineView struct {
	w    io.Writer
	last string
}

func (v *lineView) update(p replayProgress) {
	if l := p.line(); l != v.last {
		fmt.Fprintln(v.w, l)
		v.last = l
	}
}

func (v *lineView) finish(p replayProgress) { v.update(p) }

// barView draws a progress bar of replayed over matched, with the delivery
// outcomes in its description.
type barView struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (v *barView) update(p replayProgress) {
	if v.bar == nil {
		v.bar = progressbar.NewOptions(max(p.Matched, 1),
			progressbar.OptionSetWriter(v.w),
			progressbar.OptionSetDescription("replaying"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("dead letters"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowDescriptionAtLineEnd(),
		)
	}
	v.bar.Describe(fmt.Sprintf("%d succeeded, %d failed", p.Succeeded, p.Failed))
	_ = v.bar.Set(p.Replayed)
}

func (v *barView) finish(p replayProgress) {
	v.update(p)
	if p.State == "done" {
		_ = v.bar.Finish()
	} else {
		_ = v.bar.Exit()
	}
	fmt.Fprintln(v.w)
	fmt.Fprintln(v.w, p.line())
}
