//! `#[derive(InPlace)]`: see `hotswap_guest::InPlace`, which re-exports it.
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, parse_macro_input};

/// Implements `hotswap_guest::InPlace` for a struct or an enum whose fields all implement it.
#[proc_macro_derive(InPlace)]
pub fn derive_in_place(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    if let Some(lifetime) = input.generics.lifetimes().next() {
        return Err(syn::Error::new_spanned(
            lifetime,
            "a type kept in place cannot borrow: its values outlive the code that made them; \
             hold owned values (`String`, `Vec`, `Box`) instead",
        ));
    }
    let name = &input.ident;
    let repr: Vec<String> = (input.attrs.iter())
        .filter(|a| a.path().is_ident("repr"))
        .map(|a| quote!(#a).to_string())
        .collect();
    let label = format!(
        "{name}{}",
        repr.iter().map(|r| format!(" {r}")).collect::<String>()
    );
    let mut field_types = Vec::new();
    let (kind, body) = match &input.data {
        Data::Struct(s) => ("struct", fields(&s.fields, None, &mut field_types)),
        Data::Enum(e) => {
            let unit_only = e.variants.iter().all(|v| matches!(v.fields, Fields::Unit));
            let mut variants = Vec::new();
            for v in &e.variants {
                let label = variant_label(v, unit_only)?;
                variants.push(fields(&v.fields, Some(label), &mut field_types));
            }
            ("enum", quote!(#(#variants)*))
        }
        Data::Union(u) => {
            return Err(syn::Error::new_spanned(
                u.union_token,
                "`InPlace` cannot be derived for a union: which field holds a value is not known",
            ));
        }
    };
    let krate = quote!(::hotswap_guest);
    let params = input.generics.type_params().map(|p| &p.ident);
    let param_parts = quote! {#(
        let n = d.reference::<#params>();
        d.part(::core::format_args!("param #{}", n));
    )*};
    // Only the type parameters are bounded: a bound on each field's type would make a recursive
    // type (`struct Node { children: Vec<Node> }`) an endless obligation. Each field's type is
    // still required to be `InPlace` where `describe` names it, at the field's span.
    let _ = field_types;
    let mut generics = input.generics.clone();
    let where_clause = generics.make_where_clause();
    for p in input.generics.type_params() {
        let p = &p.ident;
        where_clause
            .predicates
            .push(syn::parse_quote!(#p: #krate::InPlace));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    Ok(quote! {
        // SAFETY: every field's type is `InPlace` (`describe` names each, which requires it),
        // with its real offset (`offset_of!`), and the type's real size and alignment.
        unsafe impl #impl_generics #krate::InPlace for #name #ty_generics #where_clause {
            fn describe(d: &mut #krate::Describer<'_>) {
                d.begin(#kind, #label, ::core::mem::size_of::<Self>(), ::core::mem::align_of::<Self>());
                #param_parts
                #body
            }
        }
    })
}

/// A variant's name and discriminant, as the arguments of a `format_args!` part: the value
/// itself for a unit-only enum (evaluated, so that a constant changing its value changes the
/// description); for an enum with fields, an explicit discriminant must be a literal.
fn variant_label(v: &syn::Variant, unit_only: bool) -> syn::Result<TokenStream> {
    let name = v.ident.to_string();
    let ident = &v.ident;
    match &v.discriminant {
        _ if unit_only => Ok(quote!(
            ::core::format_args!("{} = {}", #name, Self::#ident as i128)
        )),
        None => Ok(quote!(::core::format_args!("{}", #name))),
        Some((
            _,
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(value),
                ..
            }),
        )) => {
            let value = value.base10_digits().to_owned();
            Ok(quote!(::core::format_args!("{} = {}", #name, #value)))
        }
        Some((_, expr)) => Err(syn::Error::new_spanned(
            expr,
            "write this discriminant as an integer literal: its value is part of the layout \
             that `InPlace` describes",
        )),
    }
}

/// The parts for a struct's fields (with offsets), or for one variant's (`variant`: its label,
/// as `format_args!` arguments).
fn fields(
    fields: &Fields,
    variant: Option<TokenStream>,
    types: &mut Vec<syn::Type>,
) -> TokenStream {
    let mut parts = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let ty = &field.ty;
        types.push(ty.clone());
        let member: syn::Member = match &field.ident {
            Some(ident) => ident.clone().into(),
            None => syn::Index::from(i).into(),
        };
        let label = match &field.ident {
            Some(ident) => ident.to_string(),
            None => i.to_string(),
        };
        let offset = match &variant {
            None => quote!(::core::format_args!(
                " at {}",
                ::core::mem::offset_of!(Self, #member)
            )),
            Some(_) => quote!(::core::format_args!("")),
        };
        parts.push(quote_spanned! {ty.span()=>
            let n = d.reference::<#ty>();
            d.part(::core::format_args!("{}: #{}{}", #label, n, #offset));
        });
    }
    match variant {
        None => quote!(#(#parts)*),
        Some(name) if matches!(fields, Fields::Unit) => {
            quote!(d.part(::core::format_args!("variant {}", #name));)
        }
        Some(name) => {
            let (shape, close) = match fields {
                Fields::Named(_) => ("{", "}"),
                _ => ("(", ")"),
            };
            quote! {
                d.part(::core::format_args!("variant {} {}", #name, #shape));
                #(#parts)*
                d.part(::core::format_args!("{}", #close));
            }
        }
    }
}
