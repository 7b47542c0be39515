package profiles

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"

	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
)

const (
	// maxFilterBytes bounds the expression a client may send.
	maxFilterBytes = 4096
	// filterCostLimit bounds the CEL cost of evaluating a filter over one
	// profile: ample for comparisons over traits and counts, too little
	// for comprehensions that blow up.
	filterCostLimit = 100_000
	// filterScanBudget is how many profiles one filtered ListProfiles call
	// looks at, at most.
	filterScanBudget = 10_000
	// filterScanChunk is how many profiles are read from PostgreSQL at once
	// while scanning.
	filterScanChunk = 500
	// filterTimeBudget bounds the time one call spends evaluating; the scan
	// stops early and the page token resumes it.
	filterTimeBudget = 5 * time.Second
	// filterCacheSize is how many compiled filters are kept.
	filterCacheSize = 256
)

// errFilterCost means one profile's evaluation exceeded filterCostLimit.
var errFilterCost = errors.New("filter exceeds its evaluation cost limit")

// filters compiles CEL filters over a Profile, remembering the most
// recently used ones by expression.
type filters struct {
	env *cel.Env

	mu     sync.Mutex
	order  *list.List // of *compiledFilter, most recently used first
	byExpr map[string]*list.Element
}

type compiledFilter struct {
	expr string
	prg  cel.Program
}

func newFilters() (*filters, error) {
	env, err := cel.NewEnv(
		cel.Types(&profilev1.Profile{}),
		cel.Variable("profile", cel.ObjectType(string((&profilev1.Profile{}).ProtoReflect().Descriptor().FullName()))),
	)
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	return &filters{env: env, order: list.New(), byExpr: map[string]*list.Element{}}, nil
}

// filterError is a filter the client got wrong.
type filterError struct{ msg string }

func (e *filterError) Error() string { return e.msg }

// compile returns the program for expr; a *filterError says why expr is
// not a valid filter.
func (f *filters) compile(expr string) (cel.Program, error) {
	f.mu.Lock()
	if el, ok := f.byExpr[expr]; ok {
		f.order.MoveToFront(el)
		f.mu.Unlock()
		return el.Value.(*compiledFilter).prg, nil
	}
	f.mu.Unlock()

	if len(expr) > maxFilterBytes {
		return nil, &filterError{fmt.Sprintf("longer than %d bytes", maxFilterBytes)}
	}
	ast, iss := f.env.Compile(expr)
	if iss.Err() != nil {
		return nil, &filterError{iss.Err().Error()}
	}
	if t := ast.OutputType(); !t.IsExactType(types.BoolType) {
		return nil, &filterError{fmt.Sprintf("must be of type bool, not %s", t)}
	}
	prg, err := f.env.Program(ast, cel.CostLimit(filterCostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, &filterError{err.Error()}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if el, ok := f.byExpr[expr]; ok { // compiled concurrently
		return el.Value.(*compiledFilter).prg, nil
	}
	f.byExpr[expr] = f.order.PushFront(&compiledFilter{expr: expr, prg: prg})
	if f.order.Len() > filterCacheSize {
		old := f.order.Remove(f.order.Back()).(*compiledFilter)
		delete(f.byExpr, old.expr)
	}
	return prg, nil
}

// match reports whether prg is true for p. An evaluation error (a missing
// trait, a type mismatch) is no match; exceeding the cost limit is
// errFilterCost, and an interruption by ctx is ctx's error.
func match(ctx context.Context, prg cel.Program, p *profilev1.Profile) (bool, error) {
	out, _, err := prg.ContextEval(ctx, map[string]any{"profile": p})
	if err != nil {
		var cancelled interpreter.EvalCancelledError
		if errors.As(err, &cancelled) && cancelled.Cause == interpreter.CostLimitExceeded {
			return false, errFilterCost
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	b, ok := out.Value().(bool)
	return ok && b, nil
}
