// The CRI wire check (see main.go): the upstream Go bindings of the CRI
// version crius declares in proto/cri/v1/api.proto. To move to another
// version run, in hack/cri-wire/:
//   go get k8s.io/cri-api@vX.Y.Z && go mod tidy
// then bring proto/cri/v1/api.proto in line (cri-wire descriptor says how).
module crius.local/hack/cri-wire

go 1.26.0

require (
	google.golang.org/protobuf v1.36.12-0.20260120151049-f2248ac996af
	k8s.io/cri-api v0.37.2
)

require (
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260526163538-3dc84a4a5aaa // indirect
	google.golang.org/grpc v1.82.1 // indirect
)
