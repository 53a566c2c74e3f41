module github.com/myproto/myproto

go 1.26.8

require (
	github.com/google/go-cmp v0.7.0
	github.com/jsimonetti/rtnetlink/v2 v2.0.2
	github.com/mdlayher/netlink v1.7.2
	github.com/mdlayher/packet v1.2.0
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/josharian/native v1.1.0 // indirect
	github.com/mdlayher/socket v0.8.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
)
