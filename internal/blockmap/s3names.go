package blockmap

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The prefixes of the bucket records (see the table in names.go).
const (
	BucketsPrefix = "s3/"
	bucketPrefix  = "s3/b/"
	objectPrefix  = "s3/o/"
	uploadPrefix  = "s3/u/"
	partPrefix    = "s3/p/"
)

// ErrKeyTooLong refuses an object key whose record name would not fit an
// object name (objstore.MaxNameLen).
var ErrKeyTooLong = errors.New("blockmap: object key too long for a record name (about 300 bytes at most)")

// keyComponent bounds one component of an encoded key: file systems limit
// a file name to 255 bytes.
const keyComponent = 200

// maxName is objstore.MaxNameLen (blockmap does not import objstore).
const maxName = 512

// EncodeKey encodes an object key as store name components: unpadded
// URL-safe base64 (only [A-Za-z0-9_-]), cut into components of at most
// 200 characters.
func EncodeKey(key string) string {
	e := base64.RawURLEncoding.EncodeToString([]byte(key))
	var b strings.Builder
	for len(e) > keyComponent {
		b.WriteString(e[:keyComponent])
		b.WriteByte('/')
		e = e[keyComponent:]
	}
	b.WriteString(e)
	return b.String()
}

// DecodeKey is the inverse of EncodeKey.
func DecodeKey(s string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(strings.ReplaceAll(s, "/", ""))
	if err != nil || EncodeKey(string(b)) != s {
		return "", false
	}
	return string(b), true
}

// BucketName names bucket's record.
func BucketName(bucket string) string { return bucketPrefix + bucket }

// BucketRecordsPrefix is the prefix of every bucket record.
func BucketRecordsPrefix() string { return bucketPrefix }

// ObjectName names the record of the object key of bucket, or returns
// ErrKeyTooLong.
func ObjectName(bucket, key string) (string, error) {
	n := ObjectPrefix(bucket) + EncodeKey(key)
	if key == "" || len(n) > maxName {
		return "", fmt.Errorf("%w: %d bytes", ErrKeyTooLong, len(key))
	}
	return n, nil
}

// ObjectPrefix is the prefix of the object records of bucket (all of
// them if bucket is "").
func ObjectPrefix(bucket string) string {
	if bucket == "" {
		return objectPrefix
	}
	return objectPrefix + bucket + "/"
}

// UploadName names the record of a multipart upload of bucket.
func UploadName(bucket, upload string) string { return uploadPrefix + bucket + "/" + upload }

// UploadPrefix is the prefix of the upload records of bucket.
func UploadPrefix(bucket string) string { return uploadPrefix + bucket + "/" }

// PartName names part n of an upload of bucket.
func PartName(bucket, upload string, n int) string {
	return fmt.Sprintf("%s%s/%s/%05d", partPrefix, bucket, upload, n)
}

// PartPrefix is the prefix of the part records of an upload of bucket
// (of every upload if both are "").
func PartPrefix(bucket, upload string) string {
	if bucket == "" {
		return partPrefix
	}
	return partPrefix + bucket + "/" + upload + "/"
}

func parseBucketName(name string) Name {
	kind, rest, ok := strings.Cut(strings.TrimPrefix(name, BucketsPrefix), "/")
	if !ok {
		return Name{}
	}
	bucket, tail, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return Name{}
	}
	n := Name{Bucket: bucket}
	switch kind {
	case "b":
		if tail != "" || strings.Contains(rest, "/") {
			return Name{}
		}
		n.Kind = BucketRecord
	case "o":
		key, ok := DecodeKey(tail)
		if !ok || key == "" {
			return Name{}
		}
		n.Kind, n.Key = ObjectRecord, key
	case "u":
		if tail == "" || strings.Contains(tail, "/") {
			return Name{}
		}
		n.Kind, n.Upload = UploadRecord, tail
	case "p":
		up, num, ok := strings.Cut(tail, "/")
		p, err := strconv.Atoi(num)
		if !ok || up == "" || err != nil || PartName(bucket, up, p) != name {
			return Name{}
		}
		n.Kind, n.Upload, n.Part = PartRecord, up, p
	default:
		return Name{}
	}
	return n
}
