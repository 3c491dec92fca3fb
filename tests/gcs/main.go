// fake-gcs-xml: fake-gcs-server (the released github.com/fsouza/fake-gcs-server
// module, package fakestorage) plus the XML-API pieces that the Rust
// object_store crate (delta-rs, obstore, polars) uses and fake-gcs-server lacks
// (checked up to v1.56.1):
//
//	PUT    /{bucket}/{object}                        put; x-goog-copy-source => copy
//	       x-goog-if-generation-match: N              put mode=create (N=0) / update, copy_if_not_exists
//	GET    /{bucket}?list-type=2&start-after=...      list with offset (fake-gcs ignores start-after,
//	       &continuation-token=...&max-keys=...       max-keys and continuation-token)
//	POST   /{bucket}/{object}?uploads                 multipart initiate
//	PUT    /{bucket}/{object}?partNumber=N&uploadId=X multipart part
//	POST   /{bucket}/{object}?uploadId=X              multipart complete
//	DELETE /{bucket}/{object}?uploadId=X              multipart abort
//
// Object writes are translated into fake-gcs-server's JSON simple upload
// (POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=...&ifGenerationMatch=N),
// whose precondition v1.56.x checks atomically in its backend (412 on mismatch).
// Everything else (GET/HEAD/DELETE objects, JSON API, bucket creation) is
// served by fake-gcs-server unchanged. In-memory backend only.
package main

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

var reserved = map[string]bool{"storage": true, "upload": true, "download": true, "batch": true, "_internal": true}

type multipartUpload struct {
	bucket, object, contentType string
	header                      http.Header
	parts                       map[int][]byte
}

type shim struct {
	srv     *fakestorage.Server
	next    http.Handler
	logf    func(string, ...any)
	mu      sync.Mutex
	uploads map[string]*multipartUpload
}

func xmlEsc(v string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(v))
	return b.String()
}

func xmlError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, xmlEsc(msg))
}

// splitPath returns bucket and object ("" for a bucket-level path) of an XML-API path.
func splitPath(r *http.Request) (bucket, object string, ok bool) {
	p := strings.TrimPrefix(r.URL.EscapedPath(), "/")
	raw, rest, _ := strings.Cut(p, "/")
	b, err1 := url.PathUnescape(raw)
	o, err2 := url.PathUnescape(rest)
	if raw == "" || err1 != nil || err2 != nil || reserved[b] {
		return "", "", false
	}
	return b, o, true
}

func (s *shim) bucketExists(w http.ResponseWriter, bucket string) bool {
	if _, err := s.srv.Backend().GetBucket(bucket); err != nil {
		xmlError(w, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist: "+bucket)
		return false
	}
	return true
}

func (s *shim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bucket, object, ok := splitPath(r)
	if !ok || q.Has("uploadType") || q.Has("upload_id") || q.Has("X-Goog-Algorithm") {
		s.next.ServeHTTP(w, r)
		return
	}
	switch {
	case r.Method == http.MethodGet && object == "" && q.Get("list-type") == "2":
		s.list(w, r, bucket)
	case r.Method == http.MethodPost && object != "" && q.Has("uploads"):
		s.mpInitiate(w, r, bucket, object)
	case r.Method == http.MethodPut && object != "" && q.Has("uploadId") && q.Has("partNumber"):
		s.mpPart(w, r, q.Get("uploadId"), q.Get("partNumber"))
	case r.Method == http.MethodPost && object != "" && q.Has("uploadId"):
		s.mpComplete(w, r, q.Get("uploadId"))
	case r.Method == http.MethodDelete && object != "" && q.Has("uploadId"):
		s.mu.Lock()
		delete(s.uploads, q.Get("uploadId"))
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut && object != "" && len(q) == 0:
		s.put(w, r, bucket, object)
	default:
		s.next.ServeHTTP(w, r)
	}
}

// store writes an object through fake-gcs-server's JSON simple upload and writes
// the XML-API style response (ETag + x-goog-generation headers).
func (s *shim) store(w http.ResponseWriter, bucket, object string, body io.Reader, hdr http.Header,
	contentType, ifGenerationMatch string, okBody func(etag string) string) {
	v := url.Values{"uploadType": {"media"}, "name": {object}}
	if ifGenerationMatch != "" {
		v.Set("ifGenerationMatch", ifGenerationMatch)
	}
	if enc := hdr.Get("Content-Encoding"); enc != "" {
		v.Set("contentEncoding", enc)
	}
	inner, _ := http.NewRequest(http.MethodPost, "/upload/storage/v1/b/"+url.PathEscape(bucket)+"/o?"+v.Encode(), body)
	for k, vals := range hdr {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-goog-meta-") || lk == "cache-control" || lk == "content-disposition" || lk == "content-language" {
			inner.Header[k] = vals
		}
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	inner.Header.Set("Content-Type", contentType)

	rec := httptest.NewRecorder()
	s.next.ServeHTTP(rec, inner)
	switch rec.Code {
	case http.StatusOK:
		var meta struct {
			Etag       string `json:"etag"`
			Generation string `json:"generation"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &meta)
		etag := `"` + meta.Etag + `"`
		w.Header().Set("ETag", etag)
		w.Header().Set("x-goog-generation", meta.Generation)
		if okBody != nil {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, okBody(etag))
			return
		}
		w.WriteHeader(http.StatusOK)
	case http.StatusPreconditionFailed:
		xmlError(w, http.StatusPreconditionFailed, "PreconditionFailed",
			"At least one of the pre-conditions you specified did not hold: "+bucket+"/"+object)
	default:
		s.logf("inner upload failed: %d %s", rec.Code, rec.Body.String())
		xmlError(w, rec.Code, "InternalError", strings.TrimSpace(rec.Body.String()))
	}
}

func (s *shim) put(w http.ResponseWriter, r *http.Request, bucket, object string) {
	defer r.Body.Close()
	s.logf("xml put %s/%s if-generation-match=%q copy-source=%q", bucket, object,
		r.Header.Get("x-goog-if-generation-match"), r.Header.Get("x-goog-copy-source"))
	if !s.bucketExists(w, bucket) {
		return
	}
	body := io.Reader(r.Body)
	contentType := r.Header.Get("Content-Type")
	if src := r.Header.Get("x-goog-copy-source"); src != "" {
		unesc, err := url.PathUnescape(strings.TrimPrefix(src, "/"))
		srcBucket, srcObject, found := strings.Cut(unesc, "/")
		if err != nil || !found {
			xmlError(w, http.StatusBadRequest, "InvalidArgument", "bad x-goog-copy-source: "+src)
			return
		}
		obj, err := s.srv.GetObject(srcBucket, srcObject)
		if err != nil {
			xmlError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist: "+unesc)
			return
		}
		body = bytes.NewReader(obj.Content)
		contentType = obj.ContentType
	}
	s.store(w, bucket, object, body, r.Header, contentType, r.Header.Get("x-goog-if-generation-match"), nil)
}

func (s *shim) mpInitiate(w http.ResponseWriter, r *http.Request, bucket, object string) {
	if !s.bucketExists(w, bucket) {
		return
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	uid := hex.EncodeToString(id)
	s.mu.Lock()
	s.uploads[uid] = &multipartUpload{bucket: bucket, object: object, contentType: r.Header.Get("Content-Type"),
		header: r.Header.Clone(), parts: map[int][]byte{}}
	s.mu.Unlock()
	s.logf("multipart initiate %s/%s -> %s", bucket, object, uid)
	w.Header().Set("Content-Type", "application/xml")
	fmt.Fprintf(w, `%s<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>`,
		xml.Header, xmlEsc(bucket), xmlEsc(object), uid)
}

func (s *shim) mpPart(w http.ResponseWriter, r *http.Request, uid, partNumber string) {
	defer r.Body.Close()
	n, err := strconv.Atoi(partNumber)
	if err != nil {
		xmlError(w, http.StatusBadRequest, "InvalidArgument", "bad partNumber")
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		xmlError(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return
	}
	s.mu.Lock()
	up := s.uploads[uid]
	if up != nil {
		up.parts[n] = data
	}
	s.mu.Unlock()
	if up == nil {
		xmlError(w, http.StatusNotFound, "NoSuchUpload", "unknown uploadId "+uid)
		return
	}
	sum := md5.Sum(data)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	w.WriteHeader(http.StatusOK)
}

func (s *shim) mpComplete(w http.ResponseWriter, r *http.Request, uid string) {
	defer r.Body.Close()
	var req struct {
		Parts []struct {
			PartNumber int `xml:"PartNumber"`
		} `xml:"Part"`
	}
	if err := xml.NewDecoder(r.Body).Decode(&req); err != nil {
		xmlError(w, http.StatusBadRequest, "MalformedXML", err.Error())
		return
	}
	s.mu.Lock()
	up := s.uploads[uid]
	delete(s.uploads, uid)
	s.mu.Unlock()
	if up == nil {
		xmlError(w, http.StatusNotFound, "NoSuchUpload", "unknown uploadId "+uid)
		return
	}
	var content bytes.Buffer
	for _, p := range req.Parts {
		data, found := up.parts[p.PartNumber]
		if !found {
			xmlError(w, http.StatusBadRequest, "InvalidPart", fmt.Sprintf("part %d was not uploaded", p.PartNumber))
			return
		}
		content.Write(data)
	}
	s.logf("multipart complete %s/%s: %d parts, %d bytes", up.bucket, up.object, len(req.Parts), content.Len())
	s.store(w, up.bucket, up.object, &content, up.header, up.contentType, up.header.Get("x-goog-if-generation-match"),
		func(etag string) string {
			return fmt.Sprintf(`%s<CompleteMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><ETag>%s</ETag></CompleteMultipartUploadResult>`,
				xml.Header, xmlEsc(up.bucket), xmlEsc(up.object), xmlEsc(etag))
		})
}

type listEntry struct {
	key      string
	isPrefix bool
	obj      fakestorage.ObjectAttrs
}

// list implements XML-API ListObjectsV2: prefix, delimiter, start-after
// (exclusive), continuation-token, max-keys (default and cap 1000).
func (s *shim) list(w http.ResponseWriter, r *http.Request, bucket string) {
	q := r.URL.Query()
	if !s.bucketExists(w, bucket) {
		return
	}
	prefix, delim := q.Get("prefix"), q.Get("delimiter")
	after := q.Get("start-after")
	if tok := q.Get("continuation-token"); tok > after {
		after = tok
	}
	maxKeys := 1000
	if n, err := strconv.Atoi(q.Get("max-keys")); err == nil && n > 0 && n < maxKeys {
		maxKeys = n
	}
	objs, prefixes, err := s.srv.ListObjectsWithOptions(bucket, fakestorage.ListOptions{Prefix: prefix, Delimiter: delim})
	if err != nil {
		xmlError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	entries := make([]listEntry, 0, len(objs)+len(prefixes))
	for _, o := range objs {
		entries = append(entries, listEntry{key: o.Name, obj: o})
	}
	if delim != "" {
		for _, p := range prefixes {
			entries = append(entries, listEntry{key: p, isPrefix: true})
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].key < entries[j].key })
	var sel []listEntry
	next := ""
	for _, e := range entries {
		if after != "" && e.key <= after && !(e.isPrefix && strings.HasPrefix(after, e.key) && after != e.key) {
			continue
		}
		if len(sel) == maxKeys {
			next = sel[len(sel)-1].key
			break
		}
		sel = append(sel, e)
	}
	var b strings.Builder
	b.WriteString(xml.Header + `<ListBucketResult xmlns="http://doc.s3.amazonaws.com/2006-03-01">`)
	fmt.Fprintf(&b, "<Name>%s</Name><Prefix>%s</Prefix><Delimiter>%s</Delimiter><MaxKeys>%d</MaxKeys><KeyCount>%d</KeyCount><IsTruncated>%t</IsTruncated>",
		xmlEsc(bucket), xmlEsc(prefix), xmlEsc(delim), maxKeys, len(sel), next != "")
	if next != "" {
		fmt.Fprintf(&b, "<NextContinuationToken>%s</NextContinuationToken>", xmlEsc(next))
	}
	for _, e := range sel {
		if e.isPrefix {
			fmt.Fprintf(&b, "<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>", xmlEsc(e.key))
			continue
		}
		fmt.Fprintf(&b, "<Contents><Key>%s</Key><Generation>%d</Generation><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag><Size>%d</Size></Contents>",
			xmlEsc(e.key), e.obj.Generation, e.obj.Updated.UTC().Format("2006-01-02T15:04:05.000Z"), xmlEsc(e.obj.Etag), e.obj.Size)
	}
	b.WriteString("</ListBucketResult>")
	w.Header().Set("Content-Type", "application/xml")
	_, _ = io.WriteString(w, b.String())
}

func main() {
	host := flag.String("host", "127.0.0.1", "host to bind to")
	port := flag.Uint("port", 4443, "port to bind to")
	publicHost := flag.String("public-host", "", "public host (default HOST:PORT)")
	buckets := flag.String("buckets", "", "comma separated buckets to create at start")
	verbose := flag.Bool("v", false, "log every request and every translated write to stderr")
	flag.Parse()

	addr := net.JoinHostPort(*host, strconv.Itoa(int(*port)))
	if *publicHost == "" {
		*publicHost = addr
	}
	var accessLog io.Writer = io.Discard
	logf := func(string, ...any) {}
	if *verbose {
		accessLog, logf = os.Stderr, log.Printf
	}
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme:      "http",
		Host:        *host,
		Port:        uint16(*port),
		NoListener:  true,
		PublicHost:  *publicHost,
		ExternalURL: "http://" + addr,
		Writer:      accessLog,
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, b := range strings.Split(*buckets, ",") {
		if b != "" {
			srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("fake-gcs-xml listening on http://%s (public host %s)", addr, *publicHost)
	sh := &shim{srv: srv, next: srv.HTTPHandler(), logf: logf, uploads: map[string]*multipartUpload{}}
	log.Fatal(http.Serve(ln, sh))
}
