// cri-wire checks crius' own CRI declaration (proto/cri/v1/api.proto) against
// the upstream Go bindings of k8s.io/cri-api, pinned in go.mod. It is built
// into hack/bin/cri-wire by hack/install-test-tools and driven by the Rust
// test proto/tests/cri_wire.rs.
//
//	cri-wire encode DIR       writes DIR/<Message>.bin for every message of
//	                          runtime.v1: every field set to a distinct
//	                          non-default value, deterministic encoding
//	cri-wire check DIR        reads DIR/rust/<Message>.bin (the Rust side's
//	                          re-encodings), decodes each with the upstream type
//	                          and fails unless re-encoding gives the same bytes
//	cri-wire descriptor FILE  compares the runtime.v1 file in the
//	                          FileDescriptorSet FILE (ours, as protoc built it)
//	                          with upstream's: names, numbers, types, labels,
//	                          maps, streaming flags, field options
//	cri-wire version          prints the k8s.io/cri-api version built in
//
// The message set is walked from upstream's file descriptor, so a message
// added upstream cannot be missed.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	criAPIModule = "k8s.io/cri-api"
	criPackage   = "runtime.v1"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "cri-wire: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	usage := fmt.Errorf("usage: cri-wire encode DIR | check DIR | descriptor FILE | version")
	if len(args) == 0 {
		return usage
	}
	switch {
	case args[0] == "encode" && len(args) == 2:
		return encode(args[1])
	case args[0] == "check" && len(args) == 2:
		return check(args[1])
	case args[0] == "descriptor" && len(args) == 2:
		return compareDescriptor(args[1])
	case args[0] == "version" && len(args) == 1:
		fmt.Printf("cri-wire %s %s\n", criAPIModule, criAPIVersion())
		return nil
	}
	return usage
}

// upstreamFile is the runtime.v1 file descriptor of the upstream Go bindings.
func upstreamFile() protoreflect.FileDescriptor {
	return criv1.File_staging_src_k8s_io_cri_api_pkg_apis_runtime_v1_api_proto
}

func criAPIVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == criAPIModule {
			return dep.Version
		}
	}
	return "unknown"
}

// messages lists every message type of the file, nested ones included, map
// entries excluded, keyed by the name relative to the package ("Outer.Inner"
// for a nested one): the name of its .bin file.
func messages(fd protoreflect.FileDescriptor) map[string]protoreflect.MessageType {
	out := map[string]protoreflect.MessageType{}
	var walk func(protoreflect.MessageDescriptors)
	walk = func(list protoreflect.MessageDescriptors) {
		for i := 0; i < list.Len(); i++ {
			md := list.Get(i)
			if md.IsMapEntry() {
				continue
			}
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
			if err != nil {
				panic(fmt.Sprintf("upstream type %s is not registered: %v", md.FullName(), err))
			}
			out[strings.TrimPrefix(string(md.FullName()), criPackage+".")] = mt
			walk(md.Messages())
		}
	}
	walk(fd.Messages())
	return out
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// filler sets every field of a message to a value no other field of the same
// message tree has (a counter feeds every scalar), so a field read into the
// wrong slot cannot go unnoticed.
type filler struct {
	next int64
}

func (f *filler) fill(m protoreflect.Message, path []protoreflect.FullName) {
	md := m.Descriptor()
	if slices.Contains(path, md.FullName()) {
		// CRI has no recursive message; if one appears, it needs a rule here
		// (every field set would be infinite).
		panic(fmt.Sprintf("recursive message %s via %v", md.FullName(), path))
	}
	path = append(path, md.FullName())
	oneofsSet := map[protoreflect.FullName]bool{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		// One member of each oneof: the first one declared.
		if oo := fd.ContainingOneof(); oo != nil && !oo.IsSynthetic() {
			if oneofsSet[oo.FullName()] {
				continue
			}
			oneofsSet[oo.FullName()] = true
		}
		switch {
		case fd.IsMap():
			// One entry per map: prost's maps are HashMaps, whose iteration
			// order (and so encoding order) is not deterministic; a single
			// entry is encoded the same by both sides.
			mp := m.Mutable(fd).Map()
			key := f.scalar(fd.MapKey()).MapKey()
			var val protoreflect.Value
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				val = mp.NewValue()
				f.fill(val.Message(), path)
			} else {
				val = f.scalar(fd.MapValue())
			}
			mp.Set(key, val)
		case fd.IsList():
			// Two elements: a packed list's length and order count.
			list := m.Mutable(fd).List()
			for range 2 {
				if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
					el := list.NewElement()
					f.fill(el.Message(), path)
					list.Append(el)
				} else {
					list.Append(f.scalar(fd))
				}
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			f.fill(m.Mutable(fd).Message(), path)
		default:
			m.Set(fd, f.scalar(fd))
		}
	}
}

// scalar is the next distinct non-default value of fd's kind. Signed values
// alternate in sign and integers use multi-byte varints, so sign extension
// and width mistakes show.
func (f *filler) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	f.next++
	n := f.next
	signed := n
	if n%2 == 0 {
		signed = -n
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		// A non-zero value, cycling through the enum's values.
		values := fd.Enum().Values()
		var nonZero []protoreflect.EnumNumber
		for i := 0; i < values.Len(); i++ {
			if v := values.Get(i).Number(); v != 0 {
				nonZero = append(nonZero, v)
			}
		}
		if len(nonZero) == 0 {
			panic(fmt.Sprintf("enum %s has no non-zero value", fd.Enum().FullName()))
		}
		return protoreflect.ValueOfEnum(nonZero[int(n)%len(nonZero)])
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(signed * 100_003))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(signed<<33 + signed)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n * 100_003))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(n<<40 + n))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(signed) + 0.25)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(signed) + 0.125)
	case protoreflect.StringKind:
		// Non-ASCII on purpose: strings are UTF-8 on both sides.
		return protoreflect.ValueOfString(fmt.Sprintf("%s-%d-ü", fd.Name(), n))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{byte(n), 0x00, 0xff, byte(n >> 8)})
	}
	panic(fmt.Sprintf("field %s: kind %v has no filler", fd.FullName(), fd.Kind()))
}

// sample is the fully set instance of mt.
func sample(mt protoreflect.MessageType) protoreflect.Message {
	m := mt.New()
	(&filler{}).fill(m, nil)
	return m
}

func encode(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	types := messages(upstreamFile())
	for _, name := range sortedNames(types) {
		b, err := deterministic.Marshal(sample(types[name]).Interface())
		if err != nil {
			return fmt.Errorf("encode %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".bin"), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("cri-wire: encoded %d messages of %s %s into %s\n", len(types), criAPIModule, criAPIVersion(), dir)
	return nil
}

func check(dir string) error {
	rustDir := filepath.Join(dir, "rust")
	types := messages(upstreamFile())
	entries, err := os.ReadDir(rustDir)
	if err != nil {
		return err
	}
	got := map[string]bool{}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".bin"); ok && !e.IsDir() {
			got[name] = true
		}
	}
	var failures []string
	for _, name := range sortedNames(got) {
		if types[name] == nil {
			failures = append(failures, fmt.Sprintf("%s: not a message of upstream %s", name, criPackage))
		}
	}
	for _, name := range sortedNames(types) {
		if !got[name] {
			failures = append(failures, fmt.Sprintf("%s: no %s/%s.bin", name, rustDir, name))
			continue
		}
		if msg := checkOne(rustDir, name, types[name]); msg != "" {
			failures = append(failures, name+": "+msg)
		}
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d messages differ:\n  %s", len(failures), len(types), strings.Join(failures, "\n  "))
	}
	fmt.Printf("cri-wire: all %d messages of %s %s read back byte-identical from %s\n", len(types), criAPIModule, criAPIVersion(), rustDir)
	return nil
}

// checkOne decodes the Rust side's bytes with upstream's type: "" when they
// re-encode identically and carry the sample's values, else what is wrong.
func checkOne(dir, name string, mt protoreflect.MessageType) string {
	b, err := os.ReadFile(filepath.Join(dir, name+".bin"))
	if err != nil {
		return err.Error()
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(b, m); err != nil {
		return "does not decode: " + err.Error()
	}
	var problems []string
	if unknown := unknownFields(m.ProtoReflect()); len(unknown) > 0 {
		problems = append(problems, "fields upstream does not know: "+strings.Join(unknown, ", "))
	}
	if want := sample(mt).Interface(); !proto.Equal(m, want) {
		problems = append(problems, "values differ from the sample: got {"+oneLine(m)+"}")
	}
	again, err := deterministic.Marshal(m)
	if err != nil {
		return "does not re-encode: " + err.Error()
	}
	if !bytes.Equal(again, b) {
		problems = append(problems, fmt.Sprintf("re-encodes differently (%d bytes from Rust, %d from Go)", len(b), len(again)))
	}
	return strings.Join(problems, "; ")
}

// unknownFields names the messages, anywhere in m, holding fields their
// upstream type does not declare.
func unknownFields(m protoreflect.Message) []string {
	var out []string
	if len(m.GetUnknown()) > 0 {
		out = append(out, string(m.Descriptor().FullName()))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					out = append(out, unknownFields(mv.Message())...)
					return true
				})
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				for i := 0; i < v.List().Len(); i++ {
					out = append(out, unknownFields(v.List().Get(i).Message())...)
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			out = append(out, unknownFields(v.Message())...)
		}
		return true
	})
	return out
}

// compareDescriptor compares our runtime.v1 file, from the FileDescriptorSet
// at path, with upstream's, element by element.
func compareDescriptor(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		return fmt.Errorf("%s: not a FileDescriptorSet: %w", path, err)
	}
	var ours *descriptorpb.FileDescriptorProto
	for _, f := range set.File {
		if f.GetPackage() == criPackage {
			if ours != nil {
				return fmt.Errorf("%s: more than one file of package %s", path, criPackage)
			}
			ours = f
		}
	}
	if ours == nil {
		return fmt.Errorf("%s: no file of package %s", path, criPackage)
	}
	theirs := protodesc.ToFileDescriptorProto(upstreamFile())
	normalize(ours)
	normalize(theirs)

	var failures []string
	if !proto.Equal(fileHead(ours), fileHead(theirs)) {
		failures = append(failures, fmt.Sprintf("file: ours {%s}, upstream {%s}", oneLine(fileHead(ours)), oneLine(fileHead(theirs))))
	}
	failures = append(failures, compareNamed("message ", ours.MessageType, theirs.MessageType, (*descriptorpb.DescriptorProto).GetName, compareMessage)...)
	failures = append(failures, compareNamed("enum ", ours.EnumType, theirs.EnumType, (*descriptorpb.EnumDescriptorProto).GetName, compareEnum)...)
	failures = append(failures, compareNamed("service ", ours.Service, theirs.Service, (*descriptorpb.ServiceDescriptorProto).GetName, compareService)...)
	if len(failures) > 0 {
		return fmt.Errorf("%s differs from upstream %s %s:\n  %s", path, criAPIModule, criAPIVersion(), strings.Join(failures, "\n  "))
	}
	fmt.Printf("cri-wire: %s declares %s exactly as %s %s (%d messages, %d enums, %d services)\n",
		path, criPackage, criAPIModule, criAPIVersion(), len(ours.MessageType), len(ours.EnumType), len(ours.Service))
	return nil
}

// normalize drops what is not part of the contract: the file's name and
// options (go_package), source comments, json_name (derived from the field
// name, which is compared) and the debug_redact field option (which our
// protoc does not know; it never reaches the wire). Element order is kept.
func normalize(f *descriptorpb.FileDescriptorProto) {
	f.Name = nil
	f.Options = nil
	f.SourceCodeInfo = nil
	var fixMessage func(*descriptorpb.DescriptorProto)
	fixMessage = func(m *descriptorpb.DescriptorProto) {
		for _, fd := range m.Field {
			fd.JsonName = nil
			if fd.Options != nil {
				fd.Options.DebugRedact = nil
				if proto.Size(fd.Options) == 0 {
					fd.Options = nil
				}
			}
		}
		for _, nested := range m.NestedType {
			fixMessage(nested)
		}
	}
	for _, m := range f.MessageType {
		fixMessage(m)
	}
}

// fileHead is f without its messages, enums and services.
func fileHead(f *descriptorpb.FileDescriptorProto) *descriptorpb.FileDescriptorProto {
	head := proto.Clone(f).(*descriptorpb.FileDescriptorProto)
	head.MessageType, head.EnumType, head.Service = nil, nil, nil
	return head
}

// compareNamed pairs the elements of two lists by name and reports, under
// prefix, the ones missing on either side and, through deeper, how paired
// ones differ. Declaration order is compared too (it is the order of the
// generated fields and of the encoding of fields with the same number order).
func compareNamed[T proto.Message](prefix string, ours, theirs []T, name func(T) string, deeper func(string, T, T) []string) []string {
	index := func(list []T) map[string]T {
		m := map[string]T{}
		for _, el := range list {
			m[name(el)] = el
		}
		return m
	}
	o, t := index(ours), index(theirs)
	var failures []string
	for _, n := range sortedNames(t) {
		if ov, ok := o[n]; !ok {
			failures = append(failures, fmt.Sprintf("%s%s: missing from ours", prefix, n))
		} else {
			failures = append(failures, deeper(prefix+n, ov, t[n])...)
		}
	}
	for _, n := range sortedNames(o) {
		if _, ok := t[n]; !ok {
			failures = append(failures, fmt.Sprintf("%s%s: not in upstream", prefix, n))
		}
	}
	if len(failures) == 0 {
		for i := range ours {
			if name(ours[i]) != name(theirs[i]) {
				failures = append(failures, fmt.Sprintf("%s*: declared in another order than upstream (%s where upstream has %s)", prefix, name(ours[i]), name(theirs[i])))
				break
			}
		}
	}
	return failures
}

// compareLeaf reports two elements that differ in full.
func compareLeaf[T proto.Message](what string, ours, theirs T) []string {
	if proto.Equal(ours, theirs) {
		return nil
	}
	return []string{fmt.Sprintf("%s differs:\n    ours:     %s\n    upstream: %s", what, oneLine(ours), oneLine(theirs))}
}

func compareMessage(what string, ours, theirs *descriptorpb.DescriptorProto) []string {
	failures := compareNamed(what+".", ours.Field, theirs.Field, (*descriptorpb.FieldDescriptorProto).GetName, compareLeaf)
	failures = append(failures, compareNamed(what+".", ours.NestedType, theirs.NestedType, (*descriptorpb.DescriptorProto).GetName, compareMessage)...)
	failures = append(failures, compareNamed(what+".", ours.EnumType, theirs.EnumType, (*descriptorpb.EnumDescriptorProto).GetName, compareEnum)...)
	rest := func(m *descriptorpb.DescriptorProto) *descriptorpb.DescriptorProto {
		c := proto.Clone(m).(*descriptorpb.DescriptorProto)
		c.Field, c.NestedType, c.EnumType = nil, nil, nil
		return c
	}
	return append(failures, compareLeaf(what+" (oneofs, reserved, options)", rest(ours), rest(theirs))...)
}

func compareEnum(what string, ours, theirs *descriptorpb.EnumDescriptorProto) []string {
	failures := compareNamed(what+".", ours.Value, theirs.Value, (*descriptorpb.EnumValueDescriptorProto).GetName, compareLeaf)
	rest := func(e *descriptorpb.EnumDescriptorProto) *descriptorpb.EnumDescriptorProto {
		c := proto.Clone(e).(*descriptorpb.EnumDescriptorProto)
		c.Value = nil
		return c
	}
	return append(failures, compareLeaf(what+" (reserved, options)", rest(ours), rest(theirs))...)
}

func compareService(what string, ours, theirs *descriptorpb.ServiceDescriptorProto) []string {
	failures := compareNamed(what+".", ours.Method, theirs.Method, (*descriptorpb.MethodDescriptorProto).GetName, compareLeaf)
	rest := func(s *descriptorpb.ServiceDescriptorProto) *descriptorpb.ServiceDescriptorProto {
		c := proto.Clone(s).(*descriptorpb.ServiceDescriptorProto)
		c.Method = nil
		return c
	}
	return append(failures, compareLeaf(what+" (options)", rest(ours), rest(theirs))...)
}

func oneLine(m proto.Message) string {
	return prototext.MarshalOptions{}.Format(m)
}
