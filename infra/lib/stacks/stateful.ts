/**
 * The stateful stack: what outlives a redeploy of the services — the job table, the KMS key
 * that encrypts it and seals the jobs' credentials, the artifact bucket of the image
 * pipeline. Its removal policy comes from the stage (RETAIN in prod).
 */
import { CfnOutput, Duration, RemovalPolicy, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { StageConfig } from '../config';
import { ARTIFACT_PREFIX } from '../constructs/ami-pipeline';
import { JobTable } from '../constructs/job-table';
import { acknowledgeCdkProvider } from '../nag';

export interface StatefulStackProps extends StackProps {
  /** The stage's configuration. */
  readonly config: StageConfig;
}

/** Job table, key, artifact bucket. */
export class StatefulStack extends Stack {
  /** Encrypts the table; seals credentials (context `{job_id}`). */
  public readonly key: kms.Key;
  /** The jobs. */
  public readonly jobs: JobTable;
  /** The worker binary and units for the image pipeline, and its build logs. */
  public readonly artifactBucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: StatefulStackProps) {
    super(scope, id, props);
    const { removalPolicy } = props.config;
    this.key = new kms.Key(this, 'Key', {
      description: `barge ${props.config.stage}: job table encryption and job credential sealing`,
      enableKeyRotation: true,
      removalPolicy,
      pendingWindow: Duration.days(7),
    });
    this.jobs = new JobTable(this, 'Jobs', { key: this.key, removalPolicy });
    const destroy = removalPolicy === RemovalPolicy.DESTROY;
    this.artifactBucket = new s3.Bucket(this, 'Artifacts', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      versioned: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [
        { noncurrentVersionExpiration: Duration.days(30), abortIncompleteMultipartUploadAfter: Duration.days(1) },
        { prefix: 'image-builder-logs/', expiration: Duration.days(90) },
      ],
      removalPolicy,
      autoDeleteObjects: destroy,
    });
    Validations.of(this.artifactBucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'Holds build inputs (the worker binary, its units) written by make ami and Image Builder logs; object history is kept by versioning and CloudTrail records access',
    });
    new CfnOutput(this, 'ArtifactLocation', {
      value: `s3://${this.artifactBucket.bucketName}/${ARTIFACT_PREFIX}`,
      description: 'make ami uploads barge-worker and its units here',
    });
    acknowledgeCdkProvider(
      this,
      'Custom::S3AutoDeleteObjectsCustomResourceProvider',
      'auto-delete provider (empties the bucket when a non-production stage is destroyed)',
    );
  }
}
