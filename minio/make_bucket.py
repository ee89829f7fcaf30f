"""Creates a bucket through the S3 API (used for MinIO): a SigV4-signed PUT /bucket.

Standard library only, so it runs before any virtualenv exists.
"""
import datetime
import hashlib
import hmac
import sys
import urllib.error
import urllib.request

endpoint, bucket, access_key, secret_key = sys.argv[1:5]
region = "us-east-1"
host = endpoint.split("://", 1)[1]
now = datetime.datetime.now(datetime.timezone.utc)
amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
payload_hash = hashlib.sha256(b"").hexdigest()
canonical = "\n".join(["PUT", f"/{bucket}", "", f"host:{host}", f"x-amz-content-sha256:{payload_hash}",
                       f"x-amz-date:{amz_date}", "", "host;x-amz-content-sha256;x-amz-date", payload_hash])
scope = f"{day}/{region}/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


k = sign(sign(sign(sign(("AWS4" + secret_key).encode(), day), region), "s3"), "aws4_request")
signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT", headers={
    "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash,
    "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                     f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"})
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    if e.code != 409:  # BucketAlreadyOwnedByYou is fine
        sys.exit(f"creating bucket {bucket} failed: {e.code} {e.read()[:200]!r}")
