"""Model kinds: the contract (`contract.Model`), the registry (`registry`) and
the byte-level ones (byte AR, byte MDLM). Latent MDLM is `bltdiff.latent`."""
