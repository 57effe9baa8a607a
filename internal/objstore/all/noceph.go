package all

import "github.com/archipelago-go/archip/internal/objstore"

// registerExtra registers backends that need build tags; this build has
// none.
func registerExtra(r *objstore.Registry) {}
