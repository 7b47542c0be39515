package manifest

import (
	"errors"
	"fmt"
	"strings"

	argov1alpha1 "github.com/argoproj/argo-cd/v2/pkg/apis/application/v1alpha1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	kjson "sigs.k8s.io/json"

	// Before argov1alpha1's imports start up: see the package comment.
	_ "github.com/whisperhq/whisper/internal/gitops/manifest/internal/kubectli18n"
)

// Decoder decodes documents into their Go types and refuses anything the
// type does not declare: a misspelt field in Git is a field the cluster
// silently drops, which is exactly the class of bug this gate exists for.
type Decoder struct {
	scheme *runtime.Scheme
}

// NewDecoder knows every built-in Kubernetes kind (client-go's scheme) and
// Argo CD's Application, AppProject and ApplicationSet.
func NewDecoder() (*Decoder, error) {
	s := runtime.NewScheme()
	if err := clientscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("register kubernetes types: %w", err)
	}
	if err := argov1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("register argo cd types: %w", err)
	}
	return &Decoder{scheme: s}, nil
}

// ErrUnknownKind is returned for kinds the scheme does not know.
var ErrUnknownKind = errors.New("no Go type for this kind")

// Knows reports whether the decoder has a type for apiVersion/kind.
func (d *Decoder) Knows(apiVersion, kind string) bool {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return false
	}
	return d.scheme.Recognizes(gv.WithKind(kind))
}

// Decode strictly decodes doc into its Go type. Unknown fields, duplicate
// fields and wrong types are reported together, each with its field path.
func (d *Decoder) Decode(doc Document) error {
	apiVersion, kind := doc.APIVersion(), doc.Kind()
	if apiVersion == "" || kind == "" {
		return errors.New("apiVersion and kind are required")
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return fmt.Errorf("apiVersion %q: %w", apiVersion, err)
	}
	obj, err := d.scheme.New(gv.WithKind(kind))
	if err != nil {
		return fmt.Errorf("%s %s: %w", apiVersion, kind, ErrUnknownKind)
	}
	strictErrs, err := kjson.UnmarshalStrict(doc.JSON, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("%s %s: %w", apiVersion, kind, err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("%s %s: %s", apiVersion, kind, strings.Join(msgs, "; "))
	}
	return nil
}
