//go:build ceph

package s3

func init() { TestServerNames = append(TestServerNames, "radosgw") }
