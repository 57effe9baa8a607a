// Package s3 is the objstore backend on S3-compatible object stores
// (AWS S3, Ceph's radosgw, versitygw, ...), on aws-sdk-go-v2:
//
//	s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true|false&ca=FILE&profile=P&concurrency=N&timeout=D&attempts=N
//
// Keys never appear in the URL: they come from the SDK's chain
// (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the shared config and
// credentials files, profile=, instance roles). Without endpoint the store
// is AWS. path_style defaults to true with an endpoint, false without.
// ca adds a PEM file of authorities to trust for TLS. Request checksums
// are computed and validated only "when required": servers older than
// the SDK's 2025 default checksums reject them.
//
// Capabilities: S3 has no in-place or ranged write and no append, so the
// store implements no RangeWriter, Syncer, HandleOpener, Copier, Lender or
// Fencer; a volume on it logs small writes in segments of its write log
// and writes back a whole block at a checkpoint (package volume). ReadAt is
// a ranged GET. List is ListObjectsV2, which gives sizes and ETags: there
// is no NameLister, as names cost what infos cost. FreshStater is
// claimed: Stat is a HEAD, and AWS S3, radosgw and versitygw are
// read-after-write consistent, so a volume's write log is stored as
// segments; a flush is one PUT of a segment, and a taker fences the chain
// (package volume).
// Objects here are at most a few MiB: each is one PUT, no
// multipart upload.
//
// Object layout: each object is its data followed by a 24-byte trailer:
// a random nonce of the write's attempt, the version the write replaced
// (for conditional writes) and a magic. Sizes and reads exclude it. The
// nonce makes every attempt's ETag unique, so versions never repeat, also
// when the same bytes are written again, and an attempt given up on that
// lands late lands as a version of its own; the trailer also lets a write
// whose answer was lost recognise itself (see below).
//
// Versions: objstore versions are compared for equality only. A version
// is FNV-1a 64 of the object's ETag (never 0): two writes of one object
// share one with odds of 2^-64 per pair. Swap and DeleteVersion find the
// ETag to send in If-Match from a cache of the ETags this store saw, or a
// HEAD; a stale entry only makes the server refuse.
//
// Conditional writes: at open, a probe object under the prefix (not a
// valid object name, so listings skip it) finds what the server honours
// (Store.Conditional): Create is PUT with If-None-Match: *; Swap is PUT
// with If-Match: ETAG (from version 0, If-None-Match: *); DeleteVersion is
// DELETE with If-Match where the server refuses it also for an absent
// object. Where DELETE with If-Match succeeds on an absent object
// (versitygw 1.8), two DeleteVersions of one version could both succeed,
// and where DELETE ignores If-Match (radosgw 16) it is no condition at
// all: there DeleteVersion claims the version by replacing the object with
// a tombstone (a conditional PUT, which one claimant wins), and leaves
// it: a DELETE with If-Match of the tombstone is no safe condition either
// (versitygw 1.8 checks it outside the lock of its conditional PUTs, so
// it could remove an object a Create just put over the tombstone). Reads,
// Stat and List take tombstones for absent; Create replaces one. A
// tombstone costs 24 bytes and a HEAD in each listing, until the name is
// written again.
// radosgw 16 also refuses a quoted ETag in If-Match even when it matches:
// the probe finds that, and the store sends it unquoted. A server without
// conditional PUTs gets refusals wrapping objstore.ErrUnsupport from
// Create, Swap and DeleteVersion, saying to put metadata on a file:// or
// rados:// store.
//
// Failures: requests are bounded by concurrency= and each attempt by
// timeout=. Transient failures (503 SlowDown, 429, AWS's 409
// ConditionalRequestConflict, 5xx, timeouts, resets, refused connections)
// are retried up to attempts= times with exponential backoff and full
// jitter. Reads, listings, plain PUT and DELETE are
// retried freely. A conditional write whose attempt may have landed (a
// timeout, a reset, a 5xx) is retried too, and the retry's refusal is
// read in that light: if the object holds one of this write's nonces,
// the write succeeded; if the object holds a write that replaced the same version
// this one was conditioned on, this one never landed and never will (a
// conflict); otherwise the outcome is unknown and the error is no
// refusal sentinel, as the objstore contract requires of a write that
// may have happened. radosgw 16 answers the loser of a race of
// conditional PUTs with a 500 (ECANCELED): this process's conditional
// writes of one name are serialized, so such races come only from other
// hosts, whose losers may then see an unknown outcome. S3 cannot cancel
// a request: an attempt given up on may still land after its operation
// returned, a plain PUT over later writes, a conditional one if its
// condition holds again (a Create after the object was deleted), always
// as a version never returned. Delete therefore sends If-Match with the
// ETag a HEAD found, where the server honours it on DELETE, so that a
// late attempt cannot delete a later write of the name; where DELETE
// ignores If-Match (radosgw 16) a late DELETE can.
//
// Errors: 404 and NoSuchKey are objstore.ErrNotFound; 412 is ErrConflict
// (ErrExists for Create); a name that is both an object and a directory
// of others, which servers keeping objects as files refuse (versitygw:
// 409 ExistingObjectIsDirectory, ObjectParentIsFile), ErrBadName; 507
// and QuotaExceeded ErrNoSpace; 501 ErrUnsupport; a timed-out attempt
// ErrTimeout; a missing bucket and denied access say what to do.
package s3
