// Command recwriter runs inside the tiny test guest (TestLiveMigration):
// it writes record i to sector i of the disk with O_DIRECT, and after each
// write returns prints "ACK i" on the console. A record is the line
// "REC %08d\n" padded with the byte i%251 to 512 bytes.
package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

const sector = 512

func main() {
	dev := "/dev/vda"
	if len(os.Args) > 1 {
		dev = os.Args[1]
	}
	fd, err := syscall.Open(dev, syscall.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		fmt.Println("FAIL open:", err)
		return
	}
	raw := make([]byte, 2*4096)
	off := 4096 - int(uintptr(unsafe.Pointer(&raw[0]))%4096)
	buf := raw[off : off+sector] // O_DIRECT wants an aligned buffer
	fmt.Println("START")
	for i := 0; ; i++ {
		for j := range buf {
			buf[j] = byte(i % 251)
		}
		copy(buf, fmt.Sprintf("REC %08d\n", i))
		if n, err := syscall.Pwrite(fd, buf, int64(i)*sector); err != nil || n != sector {
			fmt.Printf("FAIL write %d: %d, %v\n", i, n, err)
			return
		}
		fmt.Printf("ACK %d\n", i)
	}
}
