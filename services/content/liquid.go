package content

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/osteele/liquid/expressions"
	"github.com/osteele/liquid/filters"
	"github.com/osteele/liquid/parser"
	"github.com/osteele/liquid/render"
	"github.com/osteele/liquid/tags"
	"github.com/osteele/liquid/values"
)

// Sandbox limits. They are package constants, not flags: a template that
// renders on one replica must render the same on every other.
const (
	// MaxSourceBytes bounds one part's Liquid source.
	MaxSourceBytes = 64 << 10
	// MaxOutputBytes bounds one rendered part, and every string a template
	// builds on the way (assign, replace, join).
	MaxOutputBytes = 256 << 10
	// RenderBudget bounds the time of one render (all its parts).
	RenderBudget = 100 * time.Millisecond
	// maxLoopIterations bounds the loop iterations of one render, so a
	// runaway loop stops even on a machine too slow to reach the clock
	// check often.
	maxLoopIterations = 1_000_000
)

// Reserved names: the guard tag and the escape filter are inserted by the
// compiler, never written by template authors (the compiler refuses them).
const (
	guardTag     = "whisper_guard"
	escapeFilter = "whisper_escape"
	budgetKey    = "\x00budget" // not a Liquid identifier: templates cannot reach it
)

// ErrBudget is the cause of every render that exceeded its output size,
// time or iteration budget.
var ErrBudget = errors.New("render budget exceeded")

// TemplateError is a template that does not compile, or a render that
// failed on the template's account (a filter error, a missing required
// variable). Line and Column are 1-based positions in Part's source; both
// are 0 when the error has no position.
type TemplateError struct {
	// Part names the part: "subject", "html", "text", "title", "body" or
	// "data.<key>", with the locale: "pt-BR/html".
	Part     string
	Line     int
	Column   int
	Variable string // the missing required variable, if that is the error
	Message  string
}

// Field is the request field of the part, for a template being written:
// "template.locales[pt-BR].html", "template.locales[en].data[url]".
func (e *TemplateError) Field() string {
	locale, part, _ := strings.Cut(e.Part, "/")
	if key, ok := strings.CutPrefix(part, "data."); ok {
		return "template.locales[" + locale + "].data[" + key + "]"
	}
	if part == "" {
		return "template.locales[" + locale + "]"
	}
	return "template.locales[" + locale + "]." + part
}

func (e *TemplateError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.Part, e.Message)
	}
	return fmt.Sprintf("%s: line %d, column %d: %s", e.Part, e.Line, e.Column, e.Message)
}

// engine is the Liquid configuration every template compiles with: the
// standard filters and tags, minus what reaches outside the sandbox, plus
// the guard tag, the escape filter and a few bounded filters.
type engine struct{ cfg render.Config }

func newEngine() *engine {
	cfg := render.NewConfig()
	filters.AddStandardFilters(&cfg)
	tags.AddStandardTags(cfg)
	// include reads the file system; the compiler refuses the tag, and
	// this renderer is the second lock on that door.
	cfg.AddTag("include", func(string) (func(io.Writer, render.Context) error, error) {
		return nil, errors.New("the include tag is not available")
	})
	cfg.AddTag(guardTag, compileGuard)
	cfg.AddFilter(escapeFilter, escapeHTML)
	cfg.AddFilter("raw", func(v any) any { return v })
	cfg.AddFilter("json", func(v any) (string, error) {
		b, err := json.Marshal(values.ToLiquid(v), json.Deterministic(true))
		return string(b), err
	})
	// Filters whose output can be far larger than their input get a size
	// check before they build it.
	cfg.AddFilter("replace", func(s, old, repl string) (string, error) {
		if n := strings.Count(s, old); len(s)+n*(len(repl)-len(old)) > MaxOutputBytes {
			return "", fmt.Errorf("replace: result over %d bytes: %w", MaxOutputBytes, ErrBudget)
		}
		return strings.ReplaceAll(s, old, repl), nil
	})
	cfg.AddFilter("join", func(a []any, sep func(string) string) (string, error) {
		s, n := sep(" "), 0
		parts := make([]string, 0, len(a))
		for _, v := range a {
			if v == nil {
				continue
			}
			p := fmt.Sprint(v)
			n += len(p) + len(s)
			if n > MaxOutputBytes {
				return "", fmt.Errorf("join: result over %d bytes: %w", MaxOutputBytes, ErrBudget)
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, s), nil
	})
	return &engine{cfg: cfg}
}

// budget is one render's allowance, shared by its parts; it is reached by
// the guard tag through the bindings and by the output writer directly.
type budget struct {
	ctx        context.Context
	deadline   time.Time
	iterations int
}

func (b *budget) check() error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if time.Now().After(b.deadline) {
		return fmt.Errorf("render took over %v: %w", RenderBudget, ErrBudget)
	}
	return nil
}

// compileGuard builds the guard tag the compiler inserts at the top of
// every loop body (no argument: count an iteration) and after every assign
// (the assigned variable: bound its size). It writes nothing, so it leaves
// whitespace control ({%- -%}) intact.
func compileGuard(arg string) (func(io.Writer, render.Context) error, error) {
	name := strings.TrimSpace(arg)
	return func(_ io.Writer, ctx render.Context) error {
		b, ok := ctx.Get(budgetKey).(*budget)
		if !ok {
			return errors.New("render without a budget")
		}
		if name != "" {
			if s, ok := ctx.Get(name).(string); ok && len(s) > MaxOutputBytes {
				return fmt.Errorf("variable %s is over %d bytes: %w", name, MaxOutputBytes, ErrBudget)
			}
			return nil
		}
		b.iterations++
		if b.iterations > maxLoopIterations {
			return fmt.Errorf("over %d loop iterations: %w", maxLoopIterations, ErrBudget)
		}
		if b.iterations%256 == 0 {
			return b.check()
		}
		return nil
	}, nil
}

// escapeHTML is the filter the compiler appends to every output of an HTML
// part: it prints v as Liquid would, then escapes it.
func escapeHTML(v any) string {
	var buf bytes.Buffer
	writeValue(&buf, values.ToLiquid(v))
	return html.EscapeString(buf.String())
}

// writeValue prints v the way the renderer prints an {{ object }}.
func writeValue(buf *bytes.Buffer, v any) {
	switch v := v.(type) {
	case nil:
	case string:
		buf.WriteString(v)
	case time.Time:
		buf.WriteString(v.Format("2006-01-02 15:04:05 -0700"))
	case []byte:
		buf.Write(v)
	default:
		rv := reflect.ValueOf(v)
		switch rv.Kind() {
		case reflect.Array, reflect.Slice:
			for i := range rv.Len() {
				if item := rv.Index(i); item.IsValid() {
					writeValue(buf, values.ToLiquid(item.Interface()))
				}
			}
		default:
			fmt.Fprint(buf, v)
		}
	}
}

// part is one compiled part of a template.
type part struct {
	name string
	root render.Node
	cfg  *render.Config
	// locs maps a token's compiled source text and line to its position in
	// the author's source, for error messages (the compiler's insertions
	// shift columns).
	locs []tokenLoc
	// vars is the source of every object and tag, to find where a missing
	// required variable is used.
	exprs []tokenLoc
}

type tokenLoc struct {
	compiled string // token text as compiled
	line     int
	column   int
}

// forbiddenTags reach outside the sandbox (include reads files) or build
// unbounded strings the guard cannot see (capture renders into a buffer of
// its own; use assign with append instead).
var forbiddenTags = map[string]bool{"include": true, "capture": true, guardTag: true}

// compile compiles one part's source. With escape set (HTML parts), every
// {{ output }} not piped through raw is HTML-escaped.
func (e *engine) compile(name, src string, escape bool) (*part, error) {
	if len(src) > MaxSourceBytes {
		return nil, &TemplateError{Part: name, Message: fmt.Sprintf("source is over %d bytes", MaxSourceBytes)}
	}
	p := &part{name: name, cfg: &e.cfg}
	var out strings.Builder
	out.Grow(len(src) + len(src)/8)
	off, inRaw := 0, false
	for _, tok := range parser.Scan(src, parser.SourceLoc{LineNo: 1}, nil) {
		if tok.Source == "" { // trim markers carry no text
			continue
		}
		i := strings.Index(src[off:], tok.Source)
		if i < 0 { // cannot happen: tokens are substrings in order
			return nil, &TemplateError{Part: name, Message: "cannot scan the template"}
		}
		start := off + i
		out.WriteString(src[off:start])
		off = start + len(tok.Source)
		line, col := position(src, start)
		text := tok.Source
		switch tok.Type {
		case parser.TagTokenType:
			switch {
			case tok.Name == "raw":
				inRaw = true
			case tok.Name == "endraw":
				inRaw = false
			case inRaw:
			case forbiddenTags[tok.Name]:
				return nil, &TemplateError{Part: name, Line: line, Column: col, Message: fmt.Sprintf("the %s tag is not available", tok.Name)}
			case tok.Name == "for" || tok.Name == "tablerow":
				text += "{% " + guardTag + " %}"
			case tok.Name == "assign":
				if v, _, ok := strings.Cut(tok.Args, "="); ok {
					text += "{% " + guardTag + " " + strings.TrimSpace(v) + " %}"
				}
			}
			if !inRaw {
				p.exprs = append(p.exprs, tokenLoc{compiled: tok.Args, line: line, column: col})
			}
		case parser.ObjTokenType:
			if inRaw {
				break
			}
			if chainHasFilter(tok.Args, escapeFilter) || chainHasFilter(tok.Args, guardTag) {
				return nil, &TemplateError{Part: name, Line: line, Column: col, Message: "reserved filter name"}
			}
			// Outputs the author escaped already are not escaped twice.
			if escape && !chainHasFilter(tok.Args, "raw") && !chainHasFilter(tok.Args, "escape") && !chainHasFilter(tok.Args, "escape_once") {
				j := strings.Index(text[2:], tok.Args) + 2
				text = text[:j+len(tok.Args)] + " | " + escapeFilter + text[j+len(tok.Args):]
			}
			p.exprs = append(p.exprs, tokenLoc{compiled: tok.Args, line: line, column: col})
		}
		out.WriteString(text)
		p.locs = append(p.locs, tokenLoc{compiled: text, line: line, column: col})
	}
	out.WriteString(src[off:])
	root, err := e.cfg.Compile(out.String(), parser.SourceLoc{LineNo: 1})
	if err != nil {
		return nil, p.templateError(err)
	}
	p.root = root
	return p, nil
}

// chainHasFilter reports whether an output expression's filter chain
// names filter, reading past quoted strings.
func chainHasFilter(expr, filter string) bool {
	var quote rune
	segStart := -1
	check := func(seg string) bool {
		seg = strings.TrimSpace(seg)
		name, _, _ := strings.Cut(seg, ":")
		return strings.TrimSpace(name) == filter
	}
	for i, r := range expr {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '|':
			if segStart >= 0 && check(expr[segStart:i]) {
				return true
			}
			segStart = i + 1
		}
	}
	return segStart >= 0 && check(expr[segStart:])
}

// position is the 1-based line and column (in bytes) of offset in src.
func position(src string, offset int) (line, col int) {
	line = 1 + strings.Count(src[:offset], "\n")
	return line, offset - strings.LastIndexByte(src[:offset], '\n')
}

var liquidPrefix = regexp.MustCompile(`^Liquid error(?: \(line \d+\))?: `)

// templateError turns a Liquid error into a TemplateError positioned in the
// author's source. Liquid reports the line and the token's text; the
// column is the token's.
func (p *part) templateError(err error) error {
	var budgetErr error
	if errors.Is(err, ErrBudget) {
		budgetErr = err
	}
	msg := err.Error()
	var se parser.Error
	line := 0
	if errors.As(err, &se) {
		line = se.LineNumber()
		var fe expressions.FilterError
		switch c := se.Cause(); {
		case c == nil:
		case errors.Is(c, ErrBudget):
			budgetErr = c
		case errors.As(c, &fe) && errors.Is(fe.Err, ErrBudget):
			// Liquid wraps a filter's error without Unwrap.
			budgetErr = fe.Err
		}
	}
	if budgetErr != nil {
		return fmt.Errorf("%s: %w", p.name, budgetErr)
	}
	te := &TemplateError{Part: p.name, Line: line}
	msg = liquidPrefix.ReplaceAllString(msg, "")
	for _, l := range p.locs {
		if l.line == line && strings.HasSuffix(msg, " in "+l.compiled) {
			te.Column = l.column
			msg = strings.TrimSuffix(msg, " in "+l.compiled)
			break
		}
	}
	if te.Line > 0 && te.Column == 0 {
		te.Column = 1
	}
	msg, _, _ = strings.Cut(msg, " in {{")
	msg, _, _ = strings.Cut(msg, " in {%")
	te.Message = strings.ReplaceAll(msg, " | "+escapeFilter, "")
	return te
}

// limitWriter fails a render whose part grows over MaxOutputBytes, and
// checks the clock now and then: output-heavy templates stop on size or
// time without waiting for a loop guard.
type limitWriter struct {
	buf    bytes.Buffer
	budget *budget
	writes int
}

func (w *limitWriter) Write(b []byte) (int, error) {
	if w.buf.Len()+len(b) > MaxOutputBytes {
		return 0, fmt.Errorf("output over %d bytes: %w", MaxOutputBytes, ErrBudget)
	}
	w.writes++
	if w.writes%256 == 0 {
		if err := w.budget.check(); err != nil {
			return 0, err
		}
	}
	return w.buf.Write(b)
}

// render renders p with vars (which must hold the budget). Liquid panics
// when its final flush fails (on our writer's budget error): that is
// recovered into the error it carries.
func (p *part) render(vars map[string]any, b *budget) (out string, err error) {
	w := &limitWriter{budget: b}
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok && (errors.Is(e, ErrBudget) || errors.Is(e, context.Canceled) || errors.Is(e, context.DeadlineExceeded)) {
				err = fmt.Errorf("%s: %w", p.name, e)
				return
			}
			err = &TemplateError{Part: p.name, Message: fmt.Sprintf("render failed: %v", r)}
		}
	}()
	if rerr := render.Render(p.root, w, vars, *p.cfg); rerr != nil {
		if c := rerr.Cause(); c != nil && (errors.Is(c, context.Canceled) || errors.Is(c, context.DeadlineExceeded)) {
			return "", fmt.Errorf("%s: %w", p.name, c)
		}
		return "", p.templateError(rerr)
	}
	return w.buf.String(), nil
}
